"""One real FreeSWITCH on callctl's own freeswitch/conf, the daemon as a process, SIP callers
on loopback: answer and greeting, a turn with file playback, DTMF, barge-in, hangup and
transfer from the NOC CLI, as the caller hears them on the wire. No timing is asserted: each
test waits for what the caller hears or what the daemon logs."""

from __future__ import annotations

from pathlib import Path

from conftest import Node, start_node, stop_node
from fskit import wait_for
from nockit import run_cli

from callctl.sim import callers, corpus


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
    latencies = [x for x in callers.turn_latencies(script.log, heard) if x is not None]
    assert len(latencies) == 1 and latencies[0] > 0
    turns = wait_for("the turn in the daemon's log",
                     lambda: _events(node, "conversation.turn", call.uuid), 10)
    assert turns[0]["latency_ms"] > 0
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
    wait_for("the channel to go", lambda: not [r for r in node.fs.channels()
                                               if r.get("uuid") == call.uuid], 10)


def test_bargein_stops_the_bot(node: Node) -> None:
    call = node.call()
    script = callers.Caller([
        callers.wait_answer(),
        # 2 s in, inside the greeting's second sentence (its first ends at ~1.3 s); the
        # speech starts at once (no lead silence), while the bot is heard talking
        callers.barge_in(corpus.utterance(
            "Hello, I have a question about my bill, can you help me please?", lead_s=0.0),
            after_s=2.0),
        callers.wait_for_bot(silence_s=0.8, timeout_s=20),
        callers.hangup(),
    ])
    script.run(call)
    assert [r.ok for r in script.log] == [True] * 4, script.log
    heard = call.heard()
    cut = callers.barge_in_latencies(script.log, heard)
    why = "\n".join(map(str, [*script.log, *heard, *call.spoken()]))
    assert cut and cut[0] is not None, why         # the greeting stopped
    barge = wait_for("the barge-in in the daemon's log",
                     lambda: _events(node, "conversation.bargein", call.uuid), 10)
    assert barge[0]["kind"]


def test_hangup_from_the_noc_cli(node: Node) -> None:
    call = node.call()
    assert call.wait_answered(10)
    wait_for("the greeting", call.heard, 10)
    r = run_cli(node.daemon.config, "hangup", call.uuid or "", "--cause", "CALL_REJECTED")
    assert r.code == 0, r.err
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
    r = run_cli(node.daemon.config, "transfer", call.uuid or "", "operator")
    assert r.code == 0, r.err
    assert call.wait_hangup(15) == "NORMAL_TEMPORARY_FAILURE"
    end = wait_for("call.end", lambda: _events(node, "call.end", call.uuid), 10)[0]
    assert end["outcome"] == "transferred"
    mine = [ln for ln in node.fs.log_text().splitlines() if ln.startswith(call.uuid or "-")]
    assert any("to XML[operator@default]" in ln for ln in mine)
    assert any("bridge(error/USER_BUSY)" in ln for ln in mine)


def test_turn_over_a_16k_fork(tmp_path: Path, redis_url: str) -> None:
    """``media.sample_rate = 16000``: the switch resamples the caller to 16 kHz L16 on the
    fork; the daemon hears the turn and replies."""
    n = start_node(tmp_path, redis_url, {"media": {"sample_rate": 16000}})
    try:
        call = n.call()
        script = callers.Caller([
            callers.wait_answer(),
            callers.wait_for_bot(silence_s=0.8, timeout_s=20),
            callers.say("I would like to check my account balance."),
            callers.wait_for_bot(silence_s=0.8, timeout_s=20),
            callers.hangup(),
        ])
        script.run(call)
        assert [r.ok for r in script.log] == [True] * 5, script.log
        assert [x for x in callers.turn_latencies(script.log, call.heard()) if x is not None]
        turns = wait_for("the turn", lambda: _events(n, "conversation.turn", call.uuid), 10)
        assert turns
    finally:
        stop_node(n)
