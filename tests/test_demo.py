"""README command 1 stays true: `callctl demo` runs the emulated switch, the daemon and scripted
callers and exits 0 with a summary."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

import pytest
from testkit import REPO


@pytest.mark.slow
def test_demo_runs_and_every_call_ends_as_scripted() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "callctl", "demo", "--calls", "3", "--tts", "espeak",
         "--stagger", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "every call ended as its script expected" in out
    assert 'caller says: "I would like to talk to billing please."' in out
    assert "turn latency" in out


def test_summary_counts_the_turns_it_printed() -> None:
    """Four turns printed (two spoken, one by keys, one barge-in): the summary says which of
    them its caller-side percentiles cover, and a spoken turn without a reply is shown."""
    from callctl.demo import Scenario, summary
    from callctl.sim.callers import StepRecord
    from callctl.sim.interfaces import Heard
    from callctl.store.base import CallRecord, TurnRecord

    def call(uuid: str, heard: list[Heard]) -> SimpleNamespace:
        return SimpleNamespace(uuid=uuid, heard=lambda: heard, hangup_cause="NORMAL_CLEARING")

    said = StepRecord(1, "say", 10.0, 12.0, text="billing", speech_start=10.0, speech_end=12.0)
    keys = StepRecord(1, "dtmf", 20.0, 21.0, text="1234")
    said2 = StepRecord(2, "say", 22.0, 24.0, text="yes", speech_start=22.0, speech_end=24.0)
    cut = StepRecord(1, "barge_in", 31.0, 32.0, text="support", speech_start=31.0,
                     speech_end=32.0)
    a = call("a", [Heard(12.5, 14.0, "f", False)])
    b = call("b", [Heard(21.4, 22.5, "f", False)])               # no reply after "yes"
    c = call("c", [Heard(30.0, 31.2, "f", True), Heard(32.6, 33.0, "f", False)])
    printed = {"a": [TurnRecord(0, "billing", latency_ms=480.0)],
               "b": [TurnRecord(0, "", latency_ms=390.0), TurnRecord(1, "yes")],
               "c": [TurnRecord(0, "support", latency_ms=610.0)]}
    store = SimpleNamespace(get_call=lambda uuid: CallRecord(
        uuid=uuid, node="n", end_cause="TRANSFERRED" if uuid != "b" else "NORMAL_CLEARING"))
    running = [(Scenario("billing", "1", (), "transferred"), a, SimpleNamespace(log=[said])),
               (Scenario("keypad", "2", (), "hungup"), b, SimpleNamespace(log=[keys, said2])),
               (Scenario("barge-in", "3", (), "transferred"), c, SimpleNamespace(log=[cut]))]
    out = io.StringIO()
    assert summary(running, store, out, printed) == 0    # type: ignore[arg-type]
    text = out.getvalue()
    assert "ok  billing            transferred  1 turn, turn latency (ms, caller side): 500" \
        in text
    assert "2 turns, turn latency (ms, caller side): no reply (+1 turn by keys or barge-in)" \
        in text
    assert "1 turn, turn latency (ms, caller side): - (+1 turn by keys or barge-in)" in text
    assert "  4 turns printed above\n" in text
    assert ("turn latency, caller side: p50 500 ms, p95 500 ms, n=1 (2 by keys or barge-in, "
            "not timed from the caller's side; 1 spoken turn with no reply)") in text
    assert "daemon's timeline (as printed above): p50 480 ms, p95 597 ms, n=3\n" in text


def test_summary_counts_spoken_turns_the_daemon_did_not_record() -> None:
    from callctl.demo import Scenario, summary
    from callctl.sim.callers import StepRecord
    from callctl.sim.interfaces import Heard
    from callctl.store.base import CallRecord

    said = StepRecord(1, "say", 10.0, 12.0, text="billing", speech_start=10.0, speech_end=12.0)
    call = SimpleNamespace(uuid="a", heard=lambda: [Heard(12.5, 14.0, "f", False)],
                           hangup_cause="NORMAL_CLEARING")
    store = SimpleNamespace(get_call=lambda uuid: CallRecord(uuid=uuid, node="n"))
    out = io.StringIO()
    running = [(Scenario("billing", "1", (), "transferred"), call, SimpleNamespace(log=[said]))]
    assert summary(running, store, out, {}) == 1              # type: ignore[arg-type]
    text = out.getvalue()
    assert "BAD billing            hungup       0 turns, turn latency (ms, caller side): 500 " \
        "(1 spoken turn without a daemon turn)" in text
    assert "  0 turns printed above\n" in text
    assert "n=1 (1 spoken turn without a daemon turn)" in text
    assert "daemon's timeline" not in text
