"""`callctl demo`: the emulated switch, the daemon and a few scripted callers, in one process.

What it shows: each caller's speech (with the exact speech times of its audio), each turn the
daemon took (what it recognized, what it answered, the turn latency measured on the call's
timeline), what the caller heard, and how every call ended; then a one-screen summary with
turn-latency percentiles measured from the caller's side. Exit status 0 when every call
reached the end its script expects.

The daemon is the real one (``callctl.daemon.Daemon`` with ``callctl.voice.Voice``),
on ephemeral loopback ports, with the example flows. State goes to Redis when a URL is
configured (``--redis-url`` or ``CALLCTL_STORE_REDIS_URL``), otherwise to the in-memory store.
Recognition uses Whisper tiny.en by default because the only Vosk model on this kind of
machine is Korean (``--asr vosk`` shows the Vosk mechanics on English speech anyway).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import gevent

from callctl import config as config_mod
from callctl import log as log_mod
from callctl.bench.measure import summarize
from callctl.metrics import Metrics
from callctl.sim import callers
from callctl.sim.callers import Caller
from callctl.sim.switch import SimCall, Switch, SwitchConfig

EXAMPLES = Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class Scenario:
    """One scripted caller and the end its script should reach."""

    name: str
    did: str
    steps: tuple[Any, ...]
    expect: str        # "transferred" or "hungup"


def scenarios() -> list[Scenario]:
    """The demo's callers, against the example flows (examples/callctl.toml routes)."""
    return [
        Scenario("billing", "+15551230000", (
            callers.wait_answer(), callers.wait_for_bot(0.6),
            callers.say("I would like to talk to billing please."),
            callers.wait_for_bot(0.6), callers.pause(1.0), callers.hangup()), "transferred"),
        Scenario("appointment", "+15551230001", (
            callers.wait_answer(), callers.wait_for_bot(0.6),
            callers.say("Yes, I will be there."),
            callers.wait_for_bot(0.6), callers.pause(1.0), callers.hangup()), "hungup"),
        Scenario("account by keypad", "+15551230002", (
            callers.wait_answer(), callers.wait_for_bot(0.6),
            callers.dtmf("12345678"), callers.wait_for_bot(0.6),
            callers.say("Yes, that's right."),
            callers.wait_for_bot(0.6), callers.pause(1.0), callers.hangup()), "transferred"),
        Scenario("barge-in", "+15551230000", (
            callers.wait_answer(),
            callers.barge_in("Technical support please.", after_s=1.0),
            callers.wait_for_bot(0.6), callers.pause(1.0), callers.hangup()), "transferred"),
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from callctl.cli import add_config_argument

    add_config_argument(p)
    p.add_argument("--asr", choices=("whisper", "vosk"), default="whisper",
                   help="Recognizer (default whisper: English offline; the Vosk model here "
                        "is Korean).")
    p.add_argument("--tts", choices=("piper", "espeak"), default="piper",
                   help="Voice of the bot (default piper).")
    p.add_argument("--redis-url", default=None,
                   help="Keep call state in this Redis (default: in-memory store).")
    p.add_argument("--calls", type=int, default=None,
                   help="Run only the first N scripted callers.")
    p.add_argument("--stagger", type=float, default=1.5,
                   help="Seconds between callers dialling in (default 1.5).")
    p.add_argument("--verbose", action="store_true", help="Show the daemon's JSON log too.")


def demo_config(base: config_mod.Config, work: Path, asr: str, tts: str,
                redis_url: str | None, switch_port: int) -> config_mod.Config:
    """``base`` on ephemeral loopback ports with the example flows and a scratch directory."""
    c = config_mod
    return dataclasses.replace(
        base,
        esl=dataclasses.replace(base.esl, listen_port=0, port=switch_port, host="127.0.0.1",
                                password="ClueCon"),
        media=dataclasses.replace(base.media, listen_port=0, listen_host="127.0.0.1"),
        metrics=dataclasses.replace(base.metrics, listen_port=0),
        asr=dataclasses.replace(base.asr, engine=asr),
        tts=dataclasses.replace(base.tts, engine=tts, cache_dir=str(work / "prompts")),
        playback=dataclasses.replace(base.playback, dir=str(work / "playback")),
        dialog=dataclasses.replace(base.dialog, flows_dir=str(EXAMPLES / "flows")),
        store=dataclasses.replace(base.store, redis_url=redis_url or base.store.redis_url),
        routes=base.routes or c.load(EXAMPLES / "callctl.toml", env={}).routes,
    )


class Printer:
    """Prints, live, what each demo call does. Polls; never blocks the calls."""

    def __init__(self, out: TextIO, store: Any) -> None:
        self.out = out
        self.store = store
        self.t0 = time.monotonic()
        self.seen: dict[str, set[Any]] = {}
        self.turns: dict[str, list[Any]] = {}     # per call uuid, the turn records printed

    def line(self, who: str, text: str) -> None:
        print(f"{time.monotonic() - self.t0:6.1f}s  {who:<18} {text}", file=self.out,
              flush=True)

    def poll(self, name: str, call: SimCall, caller: Caller) -> None:
        seen = self.seen.setdefault(call.uuid, set())
        for rec in caller.log:
            key = ("step", rec.index)
            if key in seen or rec.kind in ("wait_for_bot", "pause", "wait_answer"):
                continue
            seen.add(key)
            if rec.kind in ("say", "barge_in"):
                span = ""
                if rec.speech_start is not None and rec.speech_end is not None:
                    span = f"  (speech {rec.speech_end - rec.speech_start:.1f} s)"
                verb = "says over the bot" if rec.kind == "barge_in" else "says"
                self.line(name, f"caller {verb}: \"{rec.text}\"{span}")
            elif rec.kind == "dtmf":
                self.line(name, f"caller presses: {rec.text or rec.detail}")
        try:
            turns = self.store.get_turns(call.uuid)
        except Exception:
            turns = []
        for t in turns:
            if ("turn", t.index) in seen:
                continue
            seen.add(("turn", t.index))
            self.turns.setdefault(call.uuid, []).append(t)
            lat = f"{t.latency_ms:.0f} ms" if t.latency_ms is not None else "n/a"
            heard = f"heard \"{t.transcript}\"" if t.transcript else "(keys / no speech)"
            self.line(name, f"bot {heard} → says \"{t.reply}\"  [turn latency {lat}]")
        for i, h in enumerate(call.heard()):
            key = ("heard", i)
            if key in seen or h.end - h.start < 0.05 or h.end > time.monotonic() - 0.05:
                continue
            seen.add(key)
            cut = "  — cut by barge-in" if h.interrupted else ""
            self.line(name, f"caller hears bot audio {h.end - h.start:.1f} s{cut}")


def run_demo(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from callctl.daemon import Daemon
    from callctl.voice import Voice

    base = config_mod.load(args.config) if args.config else config_mod.Config()
    log_mod.setup(dataclasses.replace(base.log, level="info" if args.verbose else "error",
                                      format="json"),
                  stream=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="callctl-demo-"))
    print("callctl demo: starting an emulated FreeSWITCH, the daemon and scripted callers",
          file=out, flush=True)
    dialplan: dict[str, str] = {}
    sw = Switch(SwitchConfig(esl_port=0, dialplan=dialplan))
    sw.start()
    redis_url = args.redis_url or os.environ.get("CALLCTL_STORE_REDIS_URL")
    cfg = demo_config(base, work, args.asr, args.tts, redis_url, sw.esl_port)
    metrics = Metrics()
    print(f"  loading models (asr={cfg.asr.engine}, tts={cfg.tts.engine}) and rendering the "
          f"flows' prompts…", file=out, flush=True)
    voice = Voice(cfg, metrics)
    daemon = Daemon(cfg, metrics, conversation_factory=voice)
    t_load = time.monotonic()
    daemon.start()
    store_kind = "Redis" if cfg.store.redis_url else "in-memory store"
    print(f"  ready in {time.monotonic() - t_load:.1f} s: ESL on 127.0.0.1:"
          f"{daemon.server.port}, fork WebSocket on {voice.forks.address[1]}, "
          f"metrics on http://127.0.0.1:{daemon.http.port}/metrics, state in {store_kind}",
          file=out, flush=True)
    for route in cfg.routes:
        dialplan[route.did] = f"socket 127.0.0.1:{daemon.server.port} async full"

    chosen = scenarios()[: args.calls] if args.calls else scenarios()
    printer = Printer(out, voice.store)
    running: list[tuple[Scenario, SimCall, Caller]] = []
    try:
        for i, sc in enumerate(chosen):
            if i:
                gevent.sleep(args.stagger)
            caller = Caller(list(sc.steps))
            call = sw.place_call(sc.did, f"+1555700{i:04d}", "PCMU", script=caller)
            printer.line(sc.name, f"dials {sc.did}")
            running.append((sc, call, caller))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(c.hangup_cause is None for _, c, _ in running):
            for sc, call, caller in running:
                printer.poll(sc.name, call, caller)
            gevent.sleep(0.1)
        with gevent.Timeout(10, False):
            while len(daemon.registry):
                gevent.sleep(0.05)
        voice.store.flush(5)
        for sc, call, caller in running:
            printer.poll(sc.name, call, caller)
        return summary(running, voice.store, out, printer.turns)
    finally:
        sw.stop()
        daemon.close()


def _n(count: int, what: str) -> str:
    return f"{count} {what}" + ("" if count == 1 else "s")


def summary(running: list[tuple[Scenario, SimCall, Caller]], store: Any, out: TextIO,
            printed: dict[str, list[Any]]) -> int:
    """Print the one-screen summary; returns the exit status (0: every call ended as expected).

    ``printed``: per call uuid, the daemon's turn records the live lines showed. The summary
    counts those same turns: per call, how many were printed, the caller-side latency of each
    plain spoken turn (speech end → first reply audio; "no reply" when none came before the
    caller spoke again) and how many printed turns it cannot time from the caller's side
    (keys, barge-ins); then the percentiles over all calls, each with what it covers."""
    print("\nsummary", file=out)
    ok_all = True
    caller_side: list[float] = []
    daemon_side: list[float] = []
    n_printed = unanswered = untimed_all = unrecorded_all = 0
    for sc, call, caller in running:
        lat = callers.turn_latencies(caller.log, call.heard())
        caller_side += [x for x in lat if x is not None]
        unanswered += sum(x is None for x in lat)
        turns = printed.get(call.uuid, [])
        n_printed += len(turns)
        daemon_side += [t.latency_ms / 1000 for t in turns if t.latency_ms is not None]
        try:
            rec = store.get_call(call.uuid)
        except Exception:
            rec = None
        outcome = "transferred" if rec is not None and rec.end_cause == "TRANSFERRED" \
            else "hungup" if call.hangup_cause is not None else "still up"
        ok = outcome == sc.expect and all(r.ok for r in caller.log)
        ok_all &= ok
        untimed, unrecorded = max(0, len(turns) - len(lat)), max(0, len(lat) - len(turns))
        untimed_all += untimed
        unrecorded_all += unrecorded
        lat_text = ", ".join("no reply" if x is None else f"{x * 1000:.0f}" for x in lat) or "-"
        if untimed:
            lat_text += f" (+{_n(untimed, 'turn')} by keys or barge-in)"
        if unrecorded:
            lat_text += f" ({_n(unrecorded, 'spoken turn')} without a daemon turn)"
        print(f"  {'ok ' if ok else 'BAD'} {sc.name:<18} {outcome:<12} {_n(len(turns), 'turn')}, "
              f"turn latency (ms, caller side): {lat_text}", file=out)
    print(f"  {_n(n_printed, 'turn')} printed above", file=out)
    c = summarize(caller_side)
    notes = [f"{untimed_all} by keys or barge-in, not timed from the caller's side"
             ] if untimed_all else []
    if unanswered:
        notes.append(f"{_n(unanswered, 'spoken turn')} with no reply")
    if unrecorded_all:
        notes.append(f"{_n(unrecorded_all, 'spoken turn')} without a daemon turn")
    if c.n:
        print(f"  turn latency, caller side: p50 {(c.p50 or 0) * 1000:.0f} ms, p95 "
              f"{(c.p95 or 0) * 1000:.0f} ms, n={c.n}"
              + (f" ({'; '.join(notes)})" if notes else ""), file=out)
    d = summarize(daemon_side)
    if d.n:
        print(f"  turn latency, daemon's timeline (as printed above): p50 "
              f"{(d.p50 or 0) * 1000:.0f} ms, p95 {(d.p95 or 0) * 1000:.0f} ms, n={d.n}",
              file=out)
    print("  result: " + ("every call ended as its script expected" if ok_all
                          else "some calls did not end as expected"), file=out, flush=True)
    return 0 if ok_all else 1


def main(args: argparse.Namespace) -> int:
    try:
        return run_demo(args)
    except config_mod.ConfigError as e:
        print(f"callctl: config error: {e}", file=sys.stderr)
        return 2
