"""Whisper encoder window: WER and decode time per window, side by side in one run.

``.venv/bin/python tests/asr/whisper_window.py [--windows 0 10 5] [--codec PCMU] [--json P]``

The corpus is the bench's speech through G.711 (``callctl.sim.corpus.utterance``, Piper,
PCMU and PCMA): the 12 standard utterances, the bench callers' utterances, barge-ins and
backchannels, and its ``--script pauses`` sentences (said in two parts, the shorter gap),
then the four ``corpus.noise`` kinds (no words expected: the words heard on them are
counted, not scored). Window 0 is the engine without a window (every utterance padded to
30 s by ``WhisperModel.transcribe``, as before). Each window has its own engine (1 CPU
thread, as the daemon builds it), warmed by one decode; every utterance is decoded by all
windows in turn, the order rotating, so a neighbour's load falls on all of them alike.
WER is ``callctl.bench.measure.word_error_rate`` on ``normalize_text`` of both sides.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from callctl.asr.whisper import WhisperEngine
from callctl.bench import measure, runner
from callctl.dialog.normalize import normalize_text
from callctl.metrics import Metrics
from callctl.sim import corpus


@dataclass
class WindowResult:
    """One window's figures over the corpus."""

    window_s: float
    decodes: int = 0
    decode_ms_p50: float | None = None
    decode_ms_p95: float | None = None
    wer: float | None = None
    noise_words: int = 0
    times: list[float] = field(default_factory=list, repr=False)
    pairs: list[tuple[str, str]] = field(default_factory=list, repr=False)
    noise_heard: list[tuple[str, str]] = field(default_factory=list, repr=False)


def speech_corpus(codecs: Sequence[str]) -> list[corpus.Utterance]:
    """The bench's speech (module doc) over each codec."""
    texts = list(dict.fromkeys([*corpus.STANDARD_UTTERANCES.values(), *runner.UTTERANCES,
                                *runner.BARGE_INS, *runner.BACKCHANNELS]))
    out: list[corpus.Utterance] = []
    for codec in codecs:
        out += [corpus.utterance(t, codec=codec) for t in texts]
        for i, (a, b) in enumerate([*runner.COMMA_SPLITS, *runner.PAUSE_SPLITS]):
            gap = (runner.COMMA_GAP_S if i < len(runner.COMMA_SPLITS) else runner.PAUSE_GAP_S)[0]
            out.append(corpus.join(corpus.utterance(a, codec=codec, tail_s=0.0),
                                   corpus.utterance(b, codec=codec, lead_s=0.0), gap))
    return out


def run(windows: Sequence[float], codecs: Sequence[str] = ("PCMU", "PCMA")
        ) -> list[WindowResult]:
    """Decode the corpus with one engine per window (module doc); blocks."""
    engines = [WhisperEngine(Metrics(CollectorRegistry()), window_s=w) for w in windows]
    results = [WindowResult(w) for w in windows]
    speech = speech_corpus(codecs)
    noises = [corpus.noise(k, codec=c) for c in codecs for k in corpus.NOISE_KINDS]
    for e in engines:
        e.transcribe(speech[0].samples, corpus.RATE)
    for i, u in enumerate([*speech, *noises]):
        order = [(i + k) % len(engines) for k in range(len(engines))]
        for k in order:
            t = time.perf_counter()
            text = engines[k].transcribe(u.samples, corpus.RATE).text
            dt = time.perf_counter() - t
            r = results[k]
            if u.voice == "noise":
                r.noise_words += len(normalize_text(text).split())
                if text:
                    r.noise_heard.append((f"{u.text} {u.codec}", text))
            else:
                r.times.append(dt)
                r.pairs.append((normalize_text(u.text), normalize_text(text)))
    for r in results:
        p = measure.summarize(r.times)
        r.decodes = p.n
        r.decode_ms_p50 = None if p.p50 is None else round(1000 * p.p50)
        r.decode_ms_p95 = None if p.p95 is None else round(1000 * p.p95)
        wer = measure.word_error_rate([a for a, _ in r.pairs], [b for _, b in r.pairs])
        r.wer = None if wer is None else round(wer, 3)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--windows", type=float, nargs="+", default=[0.0, 10.0, 5.0],
                   help="seconds; 0: no window (30 s transcribe)")
    p.add_argument("--codec", choices=("PCMU", "PCMA"), action="append")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results = run(args.windows, tuple(args.codec or ("PCMU", "PCMA")))
    print("window_s  decodes  decode_ms_p50  decode_ms_p95    wer  noise_words")
    for r in results:
        print(f"{r.window_s or 30:>8g}{' (full)' if not r.window_s else '       '}"[:15].ljust(9)
              + f"{r.decodes:>8}  {r.decode_ms_p50:>13}  {r.decode_ms_p95:>13}  {r.wer:>5}"
              f"  {r.noise_words:>11}")
    base = results[0].pairs
    for r in results:
        for (ref, hyp), (_, hyp0) in zip(r.pairs, base, strict=True):
            if hyp != ref:
                print(f"  {r.window_s:g}: ref: {ref} | hyp: {hyp}"
                      + ("" if hyp != hyp0 or r is results[0] else "  (same as first)"))
        for what, text in r.noise_heard:
            print(f"  {r.window_s:g}: {what} | hyp: {text}")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "results": [
            {k: v for k, v in asdict(r).items() if k not in ("times",)} for r in results]},
            indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
