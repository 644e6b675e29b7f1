"""Measure TTS time to first chunk and real-time factor per engine on this machine.

Usage: ``python -m callctl.tts.bench [--engines piper,espeak,flite] [--rate 8000] [--repeat 5]``.
Prints one JSON object: per engine, p50/p95 of time to first chunk (ms) for the first piece
of each reply (what a caller waits for), and the real-time factor (synthesis seconds / audio
seconds) over whole replies. The Piper voice is loaded (and warmed up) before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from callctl.tts.base import Synthesizer, split_sentences
from callctl.tts.cache import PromptCache

REPLIES = (
    "Thanks for calling Acme support, how can I help you today?",
    "Your order shipped on Monday. It should arrive by Thursday afternoon.",
    "Sure, I can help with that, but first I need to confirm your account number.",
    "One moment, please.",
    "I have booked a table for four people at seven thirty tonight. Is there anything else?",
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(synth: Synthesizer, rate: int, repeat: int) -> dict[str, Any]:
    ttfc: list[float] = []
    rtf: list[float] = []
    for _ in range(repeat):
        for reply in REPLIES:
            pieces = split_sentences(reply)
            t0 = time.perf_counter()
            first = None
            audio_s = 0.0
            for piece in pieces:
                for chunk in synth.synthesize(piece, rate):
                    if first is None:
                        first = time.perf_counter() - t0
                    audio_s += chunk.duration_s
            total = time.perf_counter() - t0
            if first is not None and audio_s > 0:
                ttfc.append(first * 1000)
                rtf.append(total / audio_s)
    return {
        "ttfc_ms_p50": round(statistics.median(ttfc), 1),
        "ttfc_ms_p95": round(_pct(ttfc, 0.95), 1),
        "rtf_p50": round(statistics.median(rtf), 3),
        "rtf_p95": round(_pct(rtf, 0.95), 3),
        "samples": len(ttfc),
    }


def cache_hit_ms(synth: Synthesizer, rate: int) -> float:
    """p50 of reading a pre-rendered prompt back from the prompt cache (a temp dir)."""
    with tempfile.TemporaryDirectory(prefix="callctl-bench-") as d:
        cache = PromptCache(d)
        cache.render(synth, REPLIES, (rate,))
        times = []
        for reply in REPLIES * 5:
            t0 = time.perf_counter()
            assert cache.get(synth, reply, rate) is not None
            times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", default="piper,espeak,flite",
                   help="comma-separated: piper, espeak, flite")
    p.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    out: dict[str, Any] = {"rate": args.rate, "cpus": os.cpu_count(),
                              "load_1m": round(os.getloadavg()[0], 2)}
    for name in args.engines.split(","):
        synth: Synthesizer
        if name == "piper":
            from callctl.tts.piper import PiperSynthesizer, warm_up
            t0 = time.perf_counter()
            piper = PiperSynthesizer()
            out["piper_load_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            warm_up(piper, args.rate)
            synth = piper
        elif name == "espeak":
            from callctl.tts.espeak import EspeakSynthesizer
            synth = EspeakSynthesizer()
        elif name == "flite":
            from callctl.tts.flite import FliteSynthesizer
            synth = FliteSynthesizer()
        else:
            print(f"unknown engine {name!r}", file=sys.stderr)
            return 2
        out[name] = measure(synth, args.rate, args.repeat)
        out[name]["cache_hit_ms_p50"] = cache_hit_ms(synth, args.rate)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
