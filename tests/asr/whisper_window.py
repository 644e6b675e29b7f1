"""Whisper encoder window: WER and decode time per window, side by side in one run.

``.venv/bin/python tests/asr/whisper_window.py [--windows 0 10 5] [--codec PCMU] [--cut S]
[--json P]``

The corpus is the bench's speech through G.711 (``callctl.sim.corpus.utterance``, Piper,
PCMU and PCMA): the 12 standard utterances, the bench callers' utterances, barge-ins and
backchannels, and its ``--script pauses`` sentences (said in two parts, the shorter gap),
then the four ``corpus.noise`` kinds (no words expected: the words heard on them are
counted, not scored). Window 0 is the engine without a window (every utterance padded to
30 s by ``WhisperModel.transcribe``, as before). Each window has its own engine (1 CPU
thread, as the daemon builds it), warmed by one decode; every utterance is decoded by all
windows in turn, the order rotating, so a neighbour's load falls on all of them alike.
WER is ``callctl.bench.measure.word_error_rate`` on ``normalize_text`` of both sides;
``final_punct`` counts the transcripts that end in . ? or ! (the turn policy's "complete"
row, a shorter endpoint). ``--cut S`` cuts each utterance as the daemon's listener does:
from 200 ms (``asr.padding_ms``) before its speech to ``S`` seconds after it (the VAD's
speech end), instead of the corpus's 0.3 s of silence before and 0.5 s after.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    final_punct: int = 0
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


def cut(u: corpus.Utterance, tail_s: float, padding_s: float = 0.2) -> corpus.Utterance:
    """``u`` from ``padding_s`` before its speech to ``tail_s`` after it."""
    a = max(0, round((u.speech_start_s - padding_s) * corpus.RATE))
    b = round((u.speech_end_s + tail_s) * corpus.RATE)
    return dataclasses.replace(u, samples=u.samples[a:b], speech_start_s=u.speech_start_s - a
                               / corpus.RATE, speech_end_s=u.speech_end_s - a / corpus.RATE)


def run(windows: Sequence[float], codecs: Sequence[str] = ("PCMU", "PCMA"),
        cut_s: float | None = None) -> list[WindowResult]:
    """Decode the corpus with one engine per window (module doc); blocks."""
    engines = [WhisperEngine(Metrics(CollectorRegistry()), window_s=w) for w in windows]
    results = [WindowResult(w) for w in windows]
    speech = speech_corpus(codecs)
    if cut_s is not None:
        speech = [cut(u, cut_s) for u in speech]
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
                r.final_punct += text.rstrip().endswith((".", "?", "!"))
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
    p.add_argument("--cut", type=float, metavar="S",
                   help="cut as the listener does, S seconds after the speech")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results = run(args.windows, tuple(args.codec or ("PCMU", "PCMA")), args.cut)
    print(" window_s  decodes  decode_ms_p50  decode_ms_p95    wer  noise_words  final_punct")
    for r in results:
        label = f"{r.window_s:g}" if r.window_s else "30 (full)"
        print(f"{label:>9}  {r.decodes:>7}  {r.decode_ms_p50:>13}  {r.decode_ms_p95:>13}  "
              f"{r.wer:>5}  {r.noise_words:>11}  {r.final_punct:>11}")
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
