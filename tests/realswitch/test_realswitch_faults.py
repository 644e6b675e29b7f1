"""Faults on the real switch, each on its own switch and daemon: SIGTERM drains a call in
progress; SIGKILL mid-call and the call comes back through the dialplan and resumes where it
was; a call parked while the daemon was down is found at start-up and resumed; the control
link survives a FreeSWITCH restart. Waits are on what the caller hears and the daemon logs."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Node, start_node, stop_node
from fskit import Daemon, wait_for

from callctl.sim import callers
from callctl.sim.phone import PhoneCall

# The hold tone covers a daemon restart (models load in a few seconds; 40 s of tone here, so a
# slow CI machine is not a failure).
HOLD = "tone_stream://L=20;%(1000,1000,440,480)"


@pytest.fixture
def node(tmp_path: Path, redis_url: str) -> Iterator[Node]:
    n = start_node(tmp_path, redis_url, extra_vars={"callctl_hold_prompt": HOLD})
    yield n
    stop_node(n)


def _mine(d: Daemon, name: str, uuid: str | None) -> list[dict[str, object]]:
    return [e for e in d.events(name) if e.get("call_uuid") == uuid]


def _one_turn(call: PhoneCall, text: str) -> callers.Caller:
    script = callers.Caller([callers.wait_for_bot(silence_s=0.8, timeout_s=60),
                             callers.say(text),
                             callers.wait_for_bot(silence_s=0.8, timeout_s=30)])
    script.run(call)
    assert [r.ok for r in script.log] == [True] * 3, script.log
    return script


def _one_turn_then_sigkill(node: Node) -> PhoneCall:
    """A call that took one turn (stored), then its daemon killed with SIGKILL."""
    call = node.call()
    assert call.wait_answered(10)
    _one_turn(call, "I would like to check my account balance.")
    first = node.daemon
    wait_for("the first turn stored", lambda: _mine(first, "conversation.turn", call.uuid), 10)
    first.signal(signal.SIGKILL)
    first.wait(10)
    return call


def _restart(node: Node) -> Daemon:
    d = Daemon(node.daemon.dir, node.daemon.config.read_text())
    d.out = node.daemon.dir / "daemon2.out"
    d.start()
    node.daemon = d
    return d


def test_sigterm_drains_the_call_in_progress(node: Node) -> None:
    call = node.call()
    assert call.wait_answered(10)
    wait_for("the greeting", call.heard, 10)
    node.daemon.signal(signal.SIGTERM)
    # drain_timeout_s (2 s) runs out with the call still up: the daemon hangs it up
    assert call.wait_hangup(30) == "NORMAL_CLEARING" and call.hangup_by == "switch"
    assert node.daemon.wait(30) == 0
    phases = [e.get("phase") for e in node.daemon.events("daemon.drain")]
    assert phases == ["stop_taking_calls", "hang_up_rest", "close"]


def test_sigkill_mid_call_comes_back_through_the_dialplan_and_resumes(node: Node) -> None:
    call = _one_turn_then_sigkill(node)
    heard_before = len(call.heard())
    second = _restart(node)
    # the dialplan plays the hold tone; the restarted daemon finds the call there at start-up,
    # takes it out of the prompt into its socket and resumes it from Redis: turn count and
    # flow node come back
    resumed = wait_for("the call resumed by the restarted daemon",
                       lambda: _mine(second, "conversation.resumed", call.uuid), 90)
    assert resumed[0]["turns"] == 1
    taken = [e for e in second.events("reconcile.resume") if e.get("call_uuid") == call.uuid]
    assert taken and taken[0]["action"] == "sent to our socket", taken
    assert not call.ended.is_set()
    assert len(call.heard()) > heard_before          # the hold tone, then the resume prompt
    script = _one_turn(call, "Yes, I am still here.")
    assert [x for x in callers.turn_latencies(script.log, call.heard()) if x is not None]
    assert wait_for("the resumed call's turn",
                    lambda: _mine(second, "conversation.turn", call.uuid), 10)
    call.hangup()
    end = wait_for("call.end", lambda: _mine(second, "call.end", call.uuid), 10)[0]
    assert end["cause"] == "NORMAL_CLEARING"


def test_call_parked_while_the_daemon_was_down_is_resumed_at_startup(node: Node) -> None:
    call = _one_turn_then_sigkill(node)
    # the channel leaves the fallback chain: an operator (or another app) parked it
    assert node.fs.api(f"uuid_transfer {call.uuid} park inline").startswith("+OK")
    wait_for("the channel in park", lambda: any(
        r.get("uuid") == call.uuid and r.get("application") == "park"
        for r in node.fs.channels()), 10)
    second = _restart(node)
    second.wait_ready()
    resumed = wait_for("reconciliation to resume the parked call",
                       lambda: [e for e in second.events("reconcile.resume")
                                if e.get("call_uuid") == call.uuid], 30)
    assert resumed
    wait_for("the call driven again", lambda: _mine(second, "conversation.resumed",
                                                    call.uuid), 30)
    _one_turn(call, "Yes, I am still here.")
    call.hangup()


def test_control_link_survives_a_freeswitch_restart(node: Node) -> None:
    node.fs.stop()
    wait_for("the daemon to see the control link down", lambda: not node.daemon.ready(), 30)
    node.fs.start()
    node.daemon.wait_ready(60)
    call = node.call()
    assert call.wait_answered(10)
    wait_for("the greeting on a call after the restart", call.heard, 15)
    call.hangup()
    assert node.daemon.events("esl.control_connected")[-1:]
    assert len(node.daemon.events("esl.control_connected")) >= 2
