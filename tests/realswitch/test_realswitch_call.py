"""One real FreeSWITCH on callctl's own freeswitch/conf, the daemon as a process, SIP callers
on loopback: answer and greeting, a turn with file playback, DTMF, barge-in, hangup and
transfer from the NOC CLI, as the caller hears them on the wire. No timing is asserted: each
test waits for what the caller hears or what the daemon logs."""

from __future__ import annotations

import subprocess
import sys

import gevent
from conftest import Node
from fskit import wait_for
from testkit import REPO

from callctl.sim import callers

GREETING_S = 4.0     # the front desk greeting is longer than this


def _events(node: Node, name: str, uuid: str | None) -> list[dict[str, object]]:
    return [e for e in node.daemon.events(name) if e.get("call_uuid") == uuid]


def test_answer_greeting_turn_and_dtmf_goodbye(node: Node) -> None:
    call = node.call()
    script = callers.Caller([
        callers.wait_answer(),
        callers.wait_for_bot(silence_s=0.8, timeout_s=20),
        callers.say("I would like to check my account balance."),
        callers.wait_for_bot(silence_s=0.8, timeout_s=20),
        callers.dtmf("9"),
    ])
    script.run(call)
    assert [r.ok for r in script.log] == [True] * 5, script.log
    assert call.wait_hangup(20) == "NORMAL_CLEARING" and call.hangup_by == "switch"
    heard = call.heard()
    # greeting, the reply to the utterance, the goodbye
    assert len(heard) >= 3, heard
    assert heard[0].end - heard[0].start > GREETING_S
    latencies = [x for x in callers.turn_latencies(script.log, heard) if x is not None]
    assert len(latencies) == 1 and latencies[0] > 0
    turns = wait_for("the turn in the daemon's log",
                     lambda: _events(node, "conversation.turn", call.uuid), 10)
    assert turns[0]["latency_ms"] > 0   # type: ignore[operator]
    end = wait_for("call.end", lambda: _events(node, "call.end", call.uuid), 10)[0]
    assert end["outcome"] == "hungup_by_us" and end["cause"] == "NORMAL_CLEARING"
    assert not call.protocol_errors


def test_caller_hangs_up_during_greeting(node: Node) -> None:
    call = node.call()
    assert call.wait_answered(10)
    wait_for("the greeting", call.heard, 10)
    call.hangup()
    end = wait_for("call.end", lambda: _events(node, "call.end", call.uuid), 10)[0]
    assert end["cause"] == "NORMAL_CLEARING"
    assert not [r for r in node.fs.channels() if r.get("uuid") == call.uuid]


def test_bargein_stops_the_bot(node: Node) -> None:
    call = node.call()
    script = callers.Caller([
        callers.wait_answer(),
        callers.barge_in("Hello, I have a question about my bill, can you help me please?",
                         after_s=1.0),
        callers.wait_for_bot(silence_s=0.8, timeout_s=20),
        callers.hangup(),
    ])
    script.run(call)
    assert [r.ok for r in script.log] == [True] * 4, script.log
    heard = call.heard()
    cut = callers.barge_in_latencies(script.log, heard)
    assert cut and cut[0] is not None, (script.log, heard)    # the greeting stopped
    assert heard[0].interrupted and heard[0].end - heard[0].start < GREETING_S
    barge = wait_for("the barge-in in the daemon's log",
                     lambda: _events(node, "conversation.bargein", call.uuid), 10)
    assert barge[0]["kind"]


def _cli(node: Node, *argv: str) -> subprocess.CompletedProcess[str]:
    r = gevent.subprocess.run([sys.executable, "-m", "callctl", *argv, "--config",
                               str(node.daemon.config)], capture_output=True, text=True,
                              timeout=30, cwd=REPO, env={"PYTHONPATH": str(REPO),
                                                         "PATH": "/usr/bin:/bin"})
    return r  # type: ignore[no-any-return]


def test_hangup_from_the_noc_cli(node: Node) -> None:
    call = node.call()
    assert call.wait_answered(10)
    wait_for("the greeting", call.heard, 10)
    r = _cli(node, "hangup", call.uuid or "", "--cause", "CALL_REJECTED")
    assert r.returncode == 0, r.stderr
    assert call.wait_hangup(10) == "CALL_REJECTED" and call.hangup_by == "switch"
    end = wait_for("call.end", lambda: _events(node, "call.end", call.uuid), 10)[0]
    assert end["cause"] == "CALL_REJECTED"


def test_transfer_from_the_noc_cli_reaches_the_humans_extension(node: Node) -> None:
    """``callctl transfer UUID operator`` → context default, extension humans, which bridges
    to callctl_human_dialstring (error/USER_BUSY in tests) and then hangs up
    NORMAL_TEMPORARY_FAILURE: the caller's BYE names that cause, so the call went there."""
    call = node.call()
    assert call.wait_answered(10)
    wait_for("the greeting", call.heard, 10)
    r = _cli(node, "transfer", call.uuid or "", "operator")
    assert r.returncode == 0, r.stderr
    assert call.wait_hangup(15) == "NORMAL_TEMPORARY_FAILURE"
    end = wait_for("call.end", lambda: _events(node, "call.end", call.uuid), 10)[0]
    assert end["outcome"] == "transferred"
    mine = [ln for ln in node.fs.log_text().splitlines() if ln.startswith(call.uuid or "-")]
    assert any("to XML[operator@default]" in ln for ln in mine)
    assert any("bridge(error/USER_BUSY)" in ln for ln in mine)
