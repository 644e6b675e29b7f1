"""Run the benchmark: N scripted callers with real speech against the emulated switch and the
real daemon, measured from the caller's side; then the same callers against the cloud-style
baseline; optionally a concurrency sweep.

How this works: this process runs the emulated FreeSWITCH (``callctl.sim``) and the callers.
Each pipeline's daemon runs in its own child process (``python -m callctl bench
--serve-daemon SPEC``: ``callctl.daemon.Daemon`` with ``callctl.voice.Voice``, or with
``callctl.bench.baseline.BaselineVoice``), so the CPU seconds and peak memory in the report
are the daemon's own (read from ``/proc/<pid>``), and the emulator's share is reported apart.
The child talks JSON lines: it prints ``{"ready": …, "esl_port": …}`` once loaded, then
answers ``{"op": "dump", "uuids": […]}`` on stdin with the store's turn records of those
calls and each call's timeline origin (CLOCK_MONOTONIC is system-wide, so the daemon's turn
marks land on the caller's clock). Closing its stdin ends it.

Every call follows one script (``script``): a backchannel over the greeting, then ``turns``
turns that cycle through (1) an utterance with a backchannel or a noise burst over the bot's
reply (alternating per call and cycle; noise: ``corpus.noise``, a thump, cough, keyboard
clicks or line hiss, seeded by caller and turn), (2) an utterance, (3) a barge-in over the
reply to (2); then DTMF 9 (goodbye) and the bot hangs up. With ``--playback stream``
the caller's figures use ``callers.join_stream``: stretches of streamed reply a few frames
apart (module underruns) count as one reply.
The bench flow (``BENCH_FLOW``) answers every utterance with the same two-sentence no-match
reply, whatever the recognizer heard, so every turn gets a reply of the same length under
any ASR. Phases run one after the other (callctl, baseline, sweep levels): the pipelines
never compete for the CPU.

``--switch freeswitch`` drives an existing FreeSWITCH instead of the emulator
(``callctl.bench.switches``): the same scripts, spoken by SIP/RTP phones
(``callctl.sim.phone``), measured on the caller's side of the wire the same way. Its dialplan
connects to one fixed daemon port, so the daemons run one after the other there (callctl and
its sweep, then the baseline). ``--script pauses`` replaces the plain utterances with ones
that pause inside the sentence (``corpus.join``): a comma pause (300-400 ms) on the first
turn of each cycle and a 400-700 ms hesitation on the second; every run counts premature
replies (bot audio that starts while the caller is still inside an utterance,
``measure.premature_replies``) per scenario.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import gevent
import gevent.subprocess

from callctl.bench import measure
from callctl.bench.measure import Kind, Spoken, summarize
from callctl.bench.report import machine_info
from callctl.bench.switches import (
    SIM_DID,
    Bench,
    BenchCall,
    EmulatedSwitch,
    RealSwitch,
    RealSwitchConfig,
)
from callctl.sim import callers, corpus
from callctl.sim.callers import Caller, Step
from callctl.sim.corpus import Utterance
from callctl.sim.media import STREAM_GAP_S

DID = SIM_DID
REPLY_WINDOW_S = 10.0      # a reply later than this (or after the next utterance) is missed
REPO = Path(__file__).resolve().parents[2]

BENCH_FLOW = """\
# callctl bench: every utterance gets the same two-sentence reply, whatever was recognized.
[flow]
start = "ask"
retries = 1000
on_fail = "bye"

[nodes.ask]
say = "Thank you for calling Acme. Tell me in a few words what you need, and I will note it."
input = "intent"
slot = "topic"
no_match = "I see. Thank you for telling me that, I have written it down for you."
reprompt = "Is there anything else you would like to tell me about it?"
no_input = "Sorry, I did not hear anything."

[nodes.ask.intents.done]
phrases = ["goodbye"]
dtmf = "9"
goto = "bye"

[nodes.bye]
say = "Thank you for calling. Goodbye."
[[nodes.bye.actions]]
type = "hangup"
cause = "NORMAL_CLEARING"
"""

#: What the callers say (no intent words of the bench flow: every turn is a no-match).
UTTERANCES = (
    "I moved to a new house last month and I need to change my address.",
    "My name is John Smith and I am calling about my order.",
    "I would like to know when my package will arrive.",
    "The delivery was late again this week.",
    "Can you tell me your opening hours on Saturday?",
    "I want to update the phone number on my file.",
)
BARGE_INS = (
    "Wait, I have one more question about the delivery.",
    "Sorry, let me tell you my order number first.",
    "Hold on, I forgot to mention the address.",
)
#: ``--script pauses``: sentences said in two parts, with a comma pause (first turn of a
#: cycle) or a mid-sentence hesitation (second turn) between them.
COMMA_SPLITS = (
    ("I moved to a new house last month,", "and I need to change my address."),
    ("My name is John Smith,", "and I am calling about my order."),
    ("The delivery was late again,", "for the second time this week."),
)
PAUSE_SPLITS = (
    ("I would like to know", "when my package will arrive."),
    ("Can you tell me", "your opening hours on Saturday?"),
    ("I want to update", "the phone number on my file."),
)
COMMA_GAP_S = (0.30, 0.40)
PAUSE_GAP_S = (0.40, 0.70)
SCRIPTS = ("standard", "pauses")
BACKCHANNELS = ("mhm", "okay", "uh huh")
NOISES = tuple(corpus.NOISE_KINDS)       # thump, cough, clicks, hiss


@dataclass(frozen=True)
class BenchConfig:
    """What one ``callctl bench`` run does (see ``callctl.bench.cli`` for the options)."""

    calls: int = 10
    turns: int = 6
    asr: str = "vosk"
    tts: str = "piper"
    playback: str = "file"
    speed: float = 1.0
    budget_ms: float = 400.0
    baseline: bool = True
    sweep: tuple[int, ...] = ()
    spread_s: float = 10.0          # calls dial in evenly over this many media seconds
    caller_voice: str = "piper"
    call_timeout_s: float = 300.0   # media seconds a phase may take beyond its scripts
    warmup: bool = True             # warm the recognizer pool before measuring
    settings: tuple[tuple[str, str, Any], ...] = ()   # --set section.key=value, both daemons
    script: str = "standard"        # or "pauses" (SCRIPTS)
    switch: str = "sim"             # or "freeswitch": an existing switch (real)
    real: RealSwitchConfig | None = None


@dataclass(frozen=True)
class Script:
    """One caller's steps; by step index, the kind of each speech step and, for utterances
    with a pause inside, (scenario, pauses as (start, end) seconds from the speech start)."""

    steps: list[Step]
    kinds: dict[int, Kind]
    shapes: dict[int, tuple[str, tuple[tuple[float, float], ...]]]


# ------------------------------------------------------------------------ scripts ---------


def script(index: int, turns: int, say_: Callable[[str], Utterance | str]
           ) -> tuple[list[Step], dict[int, Kind]]:
    """The steps of caller ``index`` and, by step index, the kind of each speech step."""
    s = caller_script(index, turns, say_)
    return s.steps, s.kinds


def paused(index: int, t: int, say_: Callable[[str], Utterance | str]
           ) -> tuple[Utterance | str, str, tuple[tuple[float, float], ...]]:
    """The ``--script pauses`` utterance of caller ``index``'s turn ``t``: (speech,
    scenario, its pause relative to the speech start). Gaps are drawn from a generator
    seeded by caller and turn. Text only (no pause) when ``say_`` gives no audio."""
    import random

    comma = t % 3 == 0
    splits, (lo, hi) = (COMMA_SPLITS, COMMA_GAP_S) if comma else (PAUSE_SPLITS, PAUSE_GAP_S)
    a, b = splits[(index + t // 3) % len(splits)]
    gap = round(random.Random(1000 * index + t).uniform(lo, hi), 3)
    first, second = say_(a), say_(b)
    scenario = "comma" if comma else "pause"
    if isinstance(first, str) or isinstance(second, str):
        return f"{a} {b}", scenario, ()
    rel = first.speech_end_s - first.speech_start_s
    return corpus.join(first, second, gap), scenario, ((rel, rel + gap),)


def caller_script(index: int, turns: int, say_: Callable[[str], Utterance | str],
                  kind: str = "standard") -> Script:
    """Caller ``index``'s ``Script`` (module doc; ``kind`` one of ``SCRIPTS``)."""
    steps: list[Step] = [callers.wait_answer(30.0)]
    kinds: dict[int, Kind] = {}
    shapes: dict[int, tuple[str, tuple[tuple[float, float], ...]]] = {}

    def add(step: Step, kind: Kind | None = None) -> None:
        if kind is not None:
            kinds[len(steps)] = kind
        steps.append(step)

    bc = 0

    def backchannel(after_s: float) -> None:
        nonlocal bc
        add(callers.barge_in(say_(BACKCHANNELS[(index + bc) % len(BACKCHANNELS)]),
                             after_s=after_s, timeout_s=8.0), "backchannel")
        bc += 1

    def noise(t: int, after_s: float) -> None:
        ev = corpus.noise(NOISES[(index + t // 3) % len(NOISES)], seed=1000 * index + t)
        add(callers.barge_in(ev, after_s=after_s, timeout_s=8.0), "noise")

    backchannel(1.5)                                  # "mhm" over the greeting
    add(callers.wait_for_bot(0.5, timeout_s=20.0))
    def utterance(t: int) -> None:
        if kind == "pauses":
            what, scenario, gaps = paused(index, t, say_)
            shapes[len(steps)] = (scenario, gaps)
        else:
            what = say_(UTTERANCES[(index + t) % len(UTTERANCES)])
        add(callers.say(what), "utterance")

    for t in range(turns):
        phase = t % 3
        if phase == 0:
            utterance(t)
            if (index + t // 3) % 2:
                noise(t, 1.2)                         # a thump / cough / clicks / hiss
            else:
                backchannel(1.2)                      # "okay" over the reply
            add(callers.wait_for_bot(0.5, timeout_s=20.0))
        elif phase == 1:
            utterance(t)
            if t == turns - 1:
                add(callers.wait_for_bot(0.5, timeout_s=20.0))
        else:
            barge = BARGE_INS[(index + t) % len(BARGE_INS)]
            add(callers.barge_in(say_(barge), after_s=1.0, timeout_s=8.0), "bargein")
            add(callers.wait_for_bot(0.5, timeout_s=20.0))
        add(callers.pause(0.3))
    add(callers.dtmf("9"))
    add(callers.wait_for_bot(0.5, timeout_s=20.0))
    add(callers.pause(1.0))
    return Script(steps, kinds, shapes)


def spoken_of(caller: Caller, kinds: dict[int, Kind],
              shapes: dict[int, tuple[str, tuple[tuple[float, float], ...]]] | None = None
              ) -> list[Spoken]:
    """What the caller said, with exact speech times (and the absolute times of the pauses
    inside shaped utterances), from its step log."""
    out = []
    for rec in caller.log:
        kind = kinds.get(rec.index)
        if kind is not None and rec.speech_start is not None and rec.speech_end is not None:
            scenario, gaps = (shapes or {}).get(rec.index, ("", ()))
            t0 = rec.speech_start
            out.append(Spoken(rec.speech_start, rec.speech_end, kind, rec.text or "",
                              scenario, tuple((t0 + a, t0 + b) for a, b in gaps)))
    return out


# ------------------------------------------------------------------- daemon process ---------


def _clock_ticks() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def system_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (not idle, not iowait), /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / _clock_ticks()


def proc_peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of process ``pid`` in MiB, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class DaemonProcess:
    """One daemon in a child process (module docstring). ``start`` blocks until it is
    ready; every wait is bounded; ``stop`` is idempotent."""

    def __init__(self, pipeline: str, bc: BenchConfig, esl: dict[str, Any], work: Path,
                 did: str = DID) -> None:
        self.pipeline = pipeline
        self.work = work / pipeline
        self.work.mkdir(parents=True, exist_ok=True)
        self.spec = {"pipeline": pipeline, "asr": bc.asr, "tts": bc.tts,
                     "playback": bc.playback, "switch_port": esl["port"], "esl": esl,
                     "did": did,
                     "work": str(self.work), "max_calls": max(100, 2 * bc.calls,
                                                                *(2 * n for n in bc.sweep)),
                     # warm recognizers kept: as many as calls run at once (the engine
                     # creates the whole pool at start-up; each one costs memory)
                     "pool_size": max(8, bc.calls, *bc.sweep),
                     "settings": [list(s) for s in bc.settings]}
        self.proc: Any = None
        self.esl_port = 0
        self.warmed = 0          # concurrency the daemon's recognizer pool has been warmed to
        self.stderr_path = self.work / "daemon.log"

    def start(self, timeout_s: float = 300.0) -> None:
        spec_path = self.work / "spec.json"
        spec_path.write_text(json.dumps(self.spec))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH"))
                                            if p)
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = gevent.subprocess.Popen(
            [sys.executable, "-m", "callctl", "bench", "--serve-daemon", str(spec_path)],
            stdin=gevent.subprocess.PIPE, stdout=gevent.subprocess.PIPE, stderr=self._stderr,
            env=env, cwd=str(self.work))
        msg = self._read(timeout_s)
        if not msg.get("ready"):
            raise RuntimeError(f"{self.pipeline} daemon failed to start: {msg}")
        self.esl_port = int(msg["esl_port"])

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def _read(self, timeout_s: float) -> dict[str, Any]:
        with gevent.Timeout(timeout_s, RuntimeError(
                f"{self.pipeline} daemon did not answer in {timeout_s:.0f} s "
                f"(see {self.stderr_path})")):
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    tail = self.stderr_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{self.pipeline} daemon exited: {tail}")
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue                       # a stray print; only JSON lines count
                if isinstance(msg, dict):
                    return msg

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def peak_rss_mb(self) -> float:
        return proc_peak_rss_mb(self.pid)

    def dump(self, uuids: Sequence[str], callers_: Sequence[str] = (), timeout_s: float = 30.0
             ) -> dict[str, Any]:
        """{"calls": {uuid: {"origin": s, "turns": [TurnRecord fields…], "end_cause": …}},
        "by_caller": {caller number: uuid}}: the calls named by uuid and those whose caller
        id number is in ``callers_`` (a phone on a real switch does not know its uuid)."""
        req = {"op": "dump", "uuids": list(uuids), "callers": list(callers_)}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(timeout_s)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=15)
        except gevent.subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._stderr.close()
        self.proc = None


def daemon_config(spec: dict[str, Any]) -> Any:
    """The child daemon's Config: loopback ephemeral ports, the bench flow, a scratch dir,
    then the run's ``--set`` changes (already checked by the CLI)."""
    from callctl import config as c
    from callctl.demo import demo_config

    work = Path(spec["work"])
    flows = work / "flows"
    flows.mkdir(parents=True, exist_ok=True)
    (flows / "bench.toml").write_text(BENCH_FLOW)
    cfg = demo_config(c.Config(), work, spec["asr"], spec["tts"], None, spec["switch_port"])
    esl = spec.get("esl") or {}
    cfg = dataclasses.replace(
        cfg, routes=(c.RouteConfig(did=spec.get("did", DID), flow="bench"),),
        esl=dataclasses.replace(cfg.esl, host=esl.get("host", cfg.esl.host),
                                port=int(esl.get("port", cfg.esl.port)),
                                password=esl.get("password", cfg.esl.password),
                                listen_port=int(esl.get("listen_port", 0))),
        dialog=dataclasses.replace(cfg.dialog, flows_dir=str(flows)),
        playback=dataclasses.replace(cfg.playback, mode=spec["playback"]),
        daemon=dataclasses.replace(cfg.daemon, max_calls=int(spec["max_calls"])),
        asr=dataclasses.replace(cfg.asr, pool_size=int(spec.get("pool_size", 8))),
        log=dataclasses.replace(cfg.log, level="error", format="json"))
    changes: dict[str, dict[str, Any]] = {}
    for section, key, value in spec.get("settings", []):
        changes.setdefault(section, {})[key] = value
    return c.replace(cfg, **changes) if changes else cfg


def serve_daemon(spec_path: str, stdin: TextIO | None = None, stdout: TextIO | None = None
                 ) -> int:
    """The child side (``callctl bench --serve-daemon SPEC``): run the daemon, answer dumps,
    exit when stdin closes."""
    from callctl import log as log_mod
    from callctl.bench.baseline import BaselineVoice
    from callctl.daemon import Daemon
    from callctl.metrics import Metrics
    from callctl.voice import Voice

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    spec = json.loads(Path(spec_path).read_text())
    cfg = daemon_config(spec)
    log_mod.setup(cfg.log, stream=sys.stderr)
    metrics = Metrics()
    base: type[Voice] = BaselineVoice if spec["pipeline"] == "baseline" else Voice
    origins: dict[str, float] = {}
    by_caller: dict[str, str] = {}

    class RecordingVoice(base):  # type: ignore[valid-type,misc]
        def __call__(self, call: Any) -> Any:
            conv = super().__call__(call)
            origins[call.uuid] = conv.origin
            by_caller[call.caller] = call.uuid
            return conv

    voice = RecordingVoice(cfg, metrics)
    daemon = Daemon(cfg, metrics, conversation_factory=voice, http=False)
    daemon.start()
    # a daemon that has been up a while: its recognizers are primed (asr.prime runs in the
    # background after READY and would otherwise take CPU from the measured calls)
    voice.wait_primed(600)
    print(json.dumps({"ready": True, "esl_port": daemon.server.port, "pid": os.getpid()}),
          file=stdout, flush=True)
    pool = gevent.get_hub().threadpool
    try:
        while True:
            line = pool.apply(stdin.readline)
            if not line:
                return 0
            try:
                req = json.loads(line)
            except ValueError:
                continue
            if req.get("op") == "dump":
                wanted = {str(c) for c in req.get("callers", [])}
                found = {c: u for c, u in by_caller.items() if c in wanted}
                uuids = list(dict.fromkeys([*req.get("uuids", []), *found.values()]))
                print(json.dumps({**_dump(daemon, voice, origins, uuids),
                                  "by_caller": found}), file=stdout, flush=True)
    finally:
        daemon.close()


def _dump(daemon: Any, voice: Any, origins: dict[str, float], uuids: list[str]
          ) -> dict[str, Any]:
    with gevent.Timeout(10, False):          # let the daemon finish its calls first
        while len(daemon.registry):
            gevent.sleep(0.05)
    voice.store.flush(5)
    calls: dict[str, Any] = {}
    for uuid in uuids:
        rec = voice.store.get_call(uuid)
        calls[uuid] = {
            "origin": origins.get(uuid),
            "end_cause": rec.end_cause if rec is not None else None,
            "turns": [{"index": t.index, "transcript": t.transcript, "reply": t.reply,
                       "marks_ms": dict(t.marks_ms), "hops_ms": dict(t.hops_ms),
                       "latency_ms": t.latency_ms} for t in voice.store.get_turns(uuid)],
        }
    return {"calls": calls}


# ------------------------------------------------------------------------ a phase ---------


@dataclass
class CallRun:
    index: int
    call: BenchCall
    caller: Caller
    kinds: dict[int, Kind]
    ended_at: float | None = None
    number: str = ""                 # the caller id number it dialled from
    uuid: str | None = None          # the switch's channel uuid (from the daemon on a real one)
    shapes: dict[int, tuple[str, tuple[tuple[float, float], ...]]] = field(
        default_factory=dict)


@dataclass
class PhaseResult:
    """What one phase (one pipeline at one concurrency) produced, raw."""

    pipeline: str
    calls: int
    speed: float
    runs: list[CallRun]
    daemon: dict[str, Any]
    cpu_s: float
    emulator_cpu_s: float
    wall_s: float
    peak_rss_mb: float
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)   # at the phase's end
    other_cpu_s: float = 0.0     # CPU used by every other process on the machine meanwhile
    turn_samples: list[float] = field(default_factory=list)


class Progress:
    """One status line: rewritten in place with \\r on a terminal, else a plain line every
    ``every_s`` seconds."""

    def __init__(self, out: TextIO, every_s: float = 5.0) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.every_s = every_s
        self._last = 0.0
        self._width = 0

    def show(self, text: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(text))
            self.out.write("\r" + text + " " * pad)
            self._width = len(text)
            self.out.flush()
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            print(text, file=self.out, flush=True)

    def end(self, text: str) -> None:
        if self.tty:
            self.show(text)
            self.out.write("\n")
            self.out.flush()
            self._width = 0
        else:
            print(text, file=self.out, flush=True)


def _status(pipeline: str, runs: list[CallRun], n: int, t0: float) -> str:
    up = sum(1 for r in runs if r.call.hangup_cause is None)
    lat = [x for r in runs for x in callers.turn_latencies(r.caller.log, r.call.heard())
           if x is not None]
    s = summarize(lat)
    p50 = f"{s.p50 * 1000:.0f}" if s.p50 is not None else "-"
    return (f"  {pipeline:<8} {time.monotonic() - t0:6.1f} s  calls placed {len(runs)}/{n}, "
            f"up {up}  turns answered {len(lat)}  p50 {p50} ms")


_phases = iter(range(1, 10**9))


def run_phase(pipeline: str, sw: Bench, proc: DaemonProcess,
              bc: BenchConfig, calls: int, say_: Callable[[str], Utterance | str],
              progress: Progress, turns: int | None = None) -> PhaseResult:
    """Place ``calls`` scripted calls (``turns`` turns each, default ``bc.turns``) to
    ``proc``'s daemon, wait for them all to end, and collect both sides' records."""
    turns = bc.turns if turns is None else turns
    sw.route(proc)
    phase = next(_phases)
    cpu0, ru0, busy0 = proc.cpu_s(), resource.getrusage(resource.RUSAGE_SELF), system_busy_s()
    t0 = time.monotonic()
    runs: list[CallRun] = []
    for i in range(calls):
        s = caller_script(i, turns, say_, bc.script)
        caller = Caller(s.steps)
        number = sw.number(phase, i)
        call = sw.place(number, caller)
        runs.append(CallRun(i, call, caller, s.kinds, number=number, uuid=call.uuid,
                            shapes=s.shapes))
        progress.show(_status(pipeline, runs, calls, t0))
        gevent.sleep(bc.spread_s / calls / bc.speed)
    deadline = time.monotonic() + (bc.call_timeout_s + 60 * turns) / bc.speed
    while time.monotonic() < deadline:
        now = time.monotonic()
        for r in runs:
            if r.ended_at is None and r.call.hangup_cause is not None:
                r.ended_at = now
        if all(r.ended_at is not None and r.caller.done.is_set() for r in runs):
            break
        progress.show(_status(pipeline, runs, calls, t0))
        gevent.sleep(0.25)
    for r in runs:                                   # a script that went wrong: end it here
        if r.call.hangup_cause is None:
            r.call.hangup()
            r.ended_at = time.monotonic()
    wall = time.monotonic() - t0
    dump = proc.dump([r.uuid for r in runs if r.uuid], [r.number for r in runs])
    by_caller = dump.get("by_caller") or {}
    for r in runs:
        r.uuid = r.uuid or by_caller.get(r.number)
    cpu = proc.cpu_s() - cpu0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    emu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    other = max(0.0, system_busy_s() - busy0 - cpu - emu)
    progress.end(_status(pipeline, runs, calls, t0) + "  done")
    return PhaseResult(pipeline, calls, bc.speed, runs, dump.get("calls", {}), cpu, emu, wall,
                       proc.peak_rss_mb(), os.getloadavg(), other)


def measured_phase(pipeline: str, sw: Bench, proc: DaemonProcess,
                   bc: BenchConfig, calls: int, say_: Callable[[str], Utterance | str],
                   progress: Progress) -> PhaseResult:
    """``run_phase`` after an unmeasured warm-up of ``calls`` one-turn calls, when the
    daemon has not yet served that many at once. A Vosk recognizer's first utterance costs
    about 5x the CPU of later ones; a daemon that has been up for a while has a warm pool,
    and that steady state is what the benchmark measures."""
    if bc.warmup and calls > proc.warmed:
        run_phase(f"{pipeline} warm-up", sw, proc, bc, calls, say_, progress, turns=1)
        proc.warmed = calls
    return run_phase(pipeline, sw, proc, bc, calls, say_, progress)


# ------------------------------------------------------------------------ analysis --------


def analyze(ph: PhaseResult) -> dict[str, Any]:
    """The report's per-pipeline figures (``callctl.bench.report`` schema) of one phase."""
    turn_lat: list[float] = []
    missed = 0
    barge: list[float] = []
    barge_ignored = 0
    fb: dict[str, list[int]] = {k: [0, 0] for k in measure.FALSE_BARGEIN_KINDS}
    pauses = [0, 0]                  # backchannels/noise that paused the bot (no cut), of n
    pause_s: list[float] = []        # how long those pauses lasted
    a2fa: list[float] = []
    hops: list[dict[str, float]] = []
    daemon_lat: list[float] = []
    pairs: list[tuple[str, str]] = []
    premature: list[measure.Premature] = []
    early: list[dict[str, Any]] = []     # each premature reply, for the report
    utterances_by: dict[str, int] = {}
    call_s = 0.0
    failed_steps = 0
    detail: list[dict[str, Any]] = []
    for r in ph.runs:
        spoken = spoken_of(r.caller, r.kinds, r.shapes)
        heard = callers.join_stream(r.call.heard(), STREAM_GAP_S / ph.speed)
        found, n_by = measure.premature_replies(spoken, heard)
        premature += found
        early += [{"call": r.index, "scenario": p.scenario,
                   "at_ms": round((p.start - p.speech_start) * 1000),
                   "speech_ms": round((p.speech_end - p.speech_start) * 1000),
                   "into_pause_ms": None if p.into_gap is None else round(p.into_gap * 1000)}
                  for p in found]
        for name, n in n_by.items():
            utterances_by[name] = utterances_by.get(name, 0) + n
        turns = [dataclasses.replace(s, kind="utterance") for s in spoken
                 if s.kind in ("utterance", "bargein")]
        lat, miss = measure.turn_latencies(turns, heard, reply_window=REPLY_WINDOW_S)
        turn_lat += lat
        missed += miss
        b, ign = measure.bargein_latencies(spoken, heard)
        barge += b
        barge_ignored += ign
        for kind, (hits, n) in measure.false_bargeins(spoken, heard).items():
            fb[kind][0] += hits
            fb[kind][1] += n
        p_hits, p_n, p_s = measure.bargein_pauses(spoken, heard)
        pauses[0] += p_hits
        pauses[1] += p_n
        pause_s += p_s
        if r.caller.answered_at is not None:
            first = [h.start for h in heard if h.start >= r.caller.answered_at]
            if first:
                a2fa.append(min(first) - r.caller.answered_at)
            if r.ended_at is not None:
                call_s += (r.ended_at - r.caller.answered_at) * ph.speed
        failed_steps += sum(1 for rec in r.caller.log if not rec.ok)
        d = ph.daemon.get(r.uuid or "") or {}
        origin = d.get("origin")
        starts: list[tuple[float, str]] = []
        for t in d.get("turns", []):
            hops.append(t.get("hops_ms") or {})
            detail.append({"call": r.index, "turn": t.get("index"),
                           "heard": (t.get("transcript") or "")[:40],
                           "latency_ms": t.get("latency_ms"), "hops_ms": t.get("hops_ms")})
            if t.get("latency_ms") is not None:
                daemon_lat.append(t["latency_ms"] / 1000)
            ss = (t.get("marks_ms") or {}).get("speech_start")
            if origin is not None and ss is not None:
                starts.append((origin + ss / 1000, t.get("transcript", "")))
        pairs += measure.match_transcripts(spoken, starts)
    wer = measure.word_error_rate([p[0] for p in pairs], [p[1] for p in pairs])
    ph.turn_samples = turn_lat
    return {
        "turn_latency_ms": summarize(turn_lat).as_ms(),
        "hops_ms": {k: summarize(v).as_ms() for k, v in measure.hop_samples(hops).items()},
        "daemon_turn_latency_ms": summarize(daemon_lat).as_ms(),
        "bargein_ms": summarize(barge).as_ms(),
        "bargein_ignored": barge_ignored,
        "answer_to_first_audio_ms": summarize(a2fa).as_ms(),
        "false_bargein_rate": false_rate(sum(v[0] for v in fb.values()),
                                         sum(v[1] for v in fb.values())),
        "false_bargein": {k: {"rate": false_rate(h, n), "hits": h, "n": n}
                          for k, (h, n) in fb.items()},
        "backchannels_over_bot": fb["backchannel"][1],
        "bargein_pause_rate": false_rate(*pauses),
        "bargein_pause_ms": summarize(pause_s).as_ms(),
        "missed_turns": missed,
        **premature_figures(premature, utterances_by),
        "failed_script_steps": failed_steps,
        "wer": None if wer is None else round(wer, 3),
        "wer_samples": [{"said": a, "recognized": b} for a, b in pairs[:6]],
        "cpu_s_per_call_min": round(measure.cpu_per_call_minute(ph.cpu_s, call_s), 3),
        "emulator_cpu_s_per_call_min": round(
            measure.cpu_per_call_minute(ph.emulator_cpu_s, call_s), 3),
        "peak_rss_mb": round(ph.peak_rss_mb, 1),
        "calls": ph.calls,
        "call_minutes": round(call_s / 60, 2),
        "wall_s": round(ph.wall_s, 1),
        "load_avg_at_end": [round(x, 2) for x in ph.load_avg],
        # cores' worth of CPU that other processes (not the daemon, not the emulator) used
        "other_processes_cores": round(ph.other_cpu_s / ph.wall_s, 2) if ph.wall_s else 0.0,
        "turns": detail,
        # each premature reply: when it started into the utterance (and into its pause)
        "premature": early,
    }


def premature_figures(found: Sequence[measure.Premature], n_by: dict[str, int]
                      ) -> dict[str, Any]:
    """The report's premature-reply keys: ``premature_replies`` (all utterances and barge-ins:
    ``{"hits", "n", "rate"}``), ``premature_by_kind`` (the same per scenario: plain, comma,
    pause, bargein) and ``premature_into_pause_ms`` (how far into the caller's pause those
    inside a known pause started)."""
    hits: dict[str, int] = dict.fromkeys(n_by, 0)
    for p in found:
        hits[p.scenario] = hits.get(p.scenario, 0) + 1
    total_n = sum(n_by.values())
    return {
        "premature_replies": {"hits": len(found), "n": total_n,
                              "rate": false_rate(len(found), total_n)},
        "premature_by_kind": {k: {"hits": hits[k], "n": n_by.get(k, 0),
                                  "rate": false_rate(hits[k], n_by.get(k, 0))}
                              for k in sorted(hits)},
        "premature_into_pause_ms": summarize(
            [p.into_gap for p in found if p.into_gap is not None]).as_ms(),
    }


def false_rate(hits: int, n: int) -> float:
    """hits / n rounded for the report; 0.0 when there was nothing to count."""
    return round(hits / n, 4) if n else 0.0


def empty_pipeline() -> dict[str, Any]:
    """Figures of a pipeline that did not run (``--no-baseline``)."""
    none = summarize([]).as_ms()
    return {"turn_latency_ms": none, "hops_ms": {}, "bargein_ms": none,
            "answer_to_first_audio_ms": none, "false_bargein_rate": 0.0,
            "false_bargein": {k: {"rate": 0.0, "hits": 0, "n": 0}
                              for k in measure.FALSE_BARGEIN_KINDS}, "missed_turns": 0,
            **premature_figures([], {}),
            "wer": None, "cpu_s_per_call_min": 0.0, "peak_rss_mb": 0.0, "ran": False}


def ratio(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    """callctl / baseline turn latency at p50 and p95 (None where either is missing)."""
    out: dict[str, float | None] = {}
    for q in ("p50", "p95"):
        x, y = a["turn_latency_ms"][q], b["turn_latency_ms"][q]
        out[q] = round(x / y, 3) if x is not None and y else None
    return out


def git_commit() -> str | None:
    """The checkout's HEAD (and "+dirty" with uncommitted changes), or None outside git."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    info = machine_info()
    info["nproc"] = len(os.sched_getaffinity(0))
    info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


# ------------------------------------------------------------------------ the run ---------


def run_bench(bc: BenchConfig, out: TextIO = sys.stdout) -> tuple[dict[str, Any],
                                                                   dict[str, list[float]]]:
    """Run every phase; returns (report, turn-latency samples by pipeline in seconds)."""
    mach = machine()
    work = Path(tempfile.mkdtemp(prefix="callctl-bench-"))
    progress = Progress(out)
    print(f"callctl bench: {bc.calls} call(s) x {bc.turns} turn(s), asr={bc.asr}, "
          f"tts={bc.tts}, playback={bc.playback}, speed={bc.speed}", file=out, flush=True)
    sw = make_switch(bc)
    sw.check()                       # a real switch that cannot be reached: stop here
    print("  preparing caller speech…", file=out, flush=True)
    cache: dict[str, Utterance] = {}
    for text in (*UTTERANCES, *BARGE_INS, *BACKCHANNELS):
        cache[text] = corpus.utterance(text, voice=bc.caller_voice, codec="PCMU")

    def say_(text: str) -> Utterance | str:
        return cache.get(text, text)

    if bc.script == "pauses":
        for a, b in (*COMMA_SPLITS, *PAUSE_SPLITS):
            for text in (a, b):
                cache[text] = corpus.utterance(text, voice=bc.caller_voice, codec="PCMU")

    sw.start()
    procs = {"callctl": DaemonProcess("callctl", bc, sw.daemon_esl(), work, sw.did)}
    if bc.baseline:
        procs["baseline"] = DaemonProcess("baseline", bc, sw.daemon_esl(), work, sw.did)

    def start(names: Sequence[str]) -> None:
        print(f"  starting {', '.join(names)} daemon process(es) (loading models)…",
              file=out, flush=True)
        t_load = time.monotonic()
        gevent.joinall([gevent.spawn(procs[n].start) for n in names], raise_error=True)
        print(f"  ready in {time.monotonic() - t_load:.1f} s", file=out, flush=True)

    def sweep(result: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for n in bc.sweep:
            if n == bc.calls:
                fig = result
            else:
                fig = analyze(measured_phase("callctl", sw, procs["callctl"], bc, n, say_,
                                             progress))
            rows.append({"calls": n, "turn_latency_ms": fig["turn_latency_ms"],
                         "bargein_ms": fig["bargein_ms"], "hops_ms": fig["hops_ms"],
                         "missed_turns": fig["missed_turns"],
                         "cpu_s_per_call_min": fig["cpu_s_per_call_min"]})
        return rows

    try:
        # a real switch's dialplan reaches one daemon port: one daemon at a time there
        start(["callctl"] if sw.sequential else list(procs))
        main = measured_phase("callctl", sw, procs["callctl"], bc, bc.calls, say_, progress)
        result = analyze(main)
        samples = {"callctl": list(main.turn_samples)}
        rows = sweep(result) if sw.sequential else []
        if bc.baseline:
            if sw.sequential:
                procs.pop("callctl").stop()
                start(["baseline"])
            base_ph = measured_phase("baseline", sw, procs["baseline"], bc, bc.calls, say_,
                                     progress)
            base = analyze(base_ph)
            samples["baseline"] = list(base_ph.turn_samples)
            procs.pop("baseline").stop()
        else:
            base = empty_pipeline()
        if not sw.sequential:
            rows = sweep(result)
    finally:
        for p in procs.values():
            p.stop()
        sw.stop()
    budget = bc.budget_ms / 1000
    best = measure.max_calls_within_budget(
        [(r["calls"], None if r["turn_latency_ms"]["p95"] is None
          else r["turn_latency_ms"]["p95"] / 1000) for r in rows], budget)
    report: dict[str, Any] = {
        **result,
        "baseline": base,
        "ratio": ratio(result, base),
        "sweep": rows,
        "sweep_max_calls_within_budget": best,
        "config": {**config_of(bc), "sweep": list(bc.sweep),
                   "baseline_endpoint_ms": _baseline_endpoint_ms(),
                   "git_commit": git_commit(),
                   "flow": "bench (callctl/bench/runner.py BENCH_FLOW)"},
        "machine": mach,
    }
    return report, samples


def make_switch(bc: BenchConfig) -> Bench:
    """The switch ``bc`` names: the emulator, or the existing FreeSWITCH of ``bc.real``."""
    if bc.switch == "freeswitch":
        if bc.real is None:
            raise RuntimeError("--switch freeswitch needs the switch's address (--sip)")
        return RealSwitch(bc.real)
    return EmulatedSwitch(bc.speed)


def config_of(bc: BenchConfig) -> dict[str, Any]:
    """``bc`` for the report, without the Event Socket password."""
    out = dataclasses.asdict(bc)
    if out.get("real"):
        out["real"] = {**out["real"], "esl_password": "***"}
    return out


def _baseline_endpoint_ms() -> int:
    from callctl.bench.baseline import ENDPOINT_MS

    return ENDPOINT_MS
