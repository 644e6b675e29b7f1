"""Stream playback (``playback.mode = "stream"``: replies streamed as L16 on the jambonz
bidirectional fork) on the real switch, with the dialplan's idle comfort noise off
(``callctl_idle_silence=0``: no ``send_silence_when_idle`` on the channel, the case where the
caller heard nothing in 10 of 10 turns) and on (400). The module plays the stream only into
frames the channel writes; the daemon sets ``send_silence_when_idle=-1`` before answering
when the dialplan did not. No timing is asserted: each test waits for what the caller hears
or what the daemon logs."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import Node, start_node, stop_node
from fskit import wait_for

from callctl.sim import callers

GREETING_S = 4.0     # the front desk greeting is longer than this


@pytest.fixture(scope="module", params=["0", "400"], ids=["idle-silence-off",
                                                         "idle-silence-on"])
def stream_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                redis_url: str) -> Iterator[Node]:
    before = os.environ.get("CALLCTL_PLAYBACK_MODE")
    os.environ["CALLCTL_PLAYBACK_MODE"] = "stream"     # the daemon process inherits it
    try:
        n = start_node(tmp_path_factory.mktemp("stream"), redis_url,
                       extra_vars={"callctl_idle_silence": request.param})
    finally:
        if before is None:
            os.environ.pop("CALLCTL_PLAYBACK_MODE", None)
        else:
            os.environ["CALLCTL_PLAYBACK_MODE"] = before
    yield n
    stop_node(n)


def _events(node: Node, name: str, uuid: str | None) -> list[dict[str, object]]:
    return [e for e in node.daemon.events(name) if e.get("call_uuid") == uuid]


def _no_fallback(node: Node, uuid: str | None) -> None:
    assert not _events(node, "playback_marks_missing", uuid)
    assert not _events(node, "conversation.stream_fallback", uuid)


def test_streamed_greeting_and_reply_are_heard(stream_node: Node) -> None:
    node = stream_node
    call = node.call()
    assert call.wait_answered(10)
    level = node.fs.api(f"uuid_getvar {call.uuid} send_silence_when_idle")
    # the dialplan's level, or the daemon's digital silence where the dialplan set none
    assert level == ("-1" if node.fs.vars["callctl_idle_silence"] == "0" else "400")
    script = callers.Caller([
        callers.wait_for_bot(silence_s=0.8, timeout_s=20),
        callers.say("I would like to check my account balance."),
        callers.wait_for_bot(silence_s=0.8, timeout_s=20),
        callers.hangup(),
    ])
    script.run(call)
    assert [r.ok for r in script.log] == [True] * 4, script.log
    heard = call.heard()
    assert len(heard) >= 2, heard                      # the greeting, then the reply
    assert heard[0].end - heard[0].start > GREETING_S, heard
    latencies = [x for x in callers.turn_latencies(script.log, heard) if x is not None]
    assert len(latencies) == 1 and latencies[0] > 0, (script.log, heard)
    wait_for("call.end", lambda: _events(node, "call.end", call.uuid), 10)
    # the module played and echoed the marks: the daemon streamed every reply
    _no_fallback(node, call.uuid)
    assert not call.protocol_errors


def test_bargein_cuts_the_streamed_reply(stream_node: Node) -> None:
    node = stream_node
    call = node.call()
    script = callers.Caller([
        callers.wait_answer(),
        callers.barge_in("Hello, I have a question about my bill, can you help me please?",
                         after_s=2.0),
        callers.wait_for_bot(silence_s=0.8, timeout_s=20),
        callers.hangup(),
    ])
    script.run(call)
    assert [r.ok for r in script.log] == [True] * 4, script.log
    heard = call.heard()
    talk = script.log[1]
    assert talk.speech_start is not None and talk.speech_end is not None
    # the greeting stopped (killAudio) and did not go on while the caller talked: whatever
    # the caller heard of it came before the speech (the cut may fall in a pause between
    # sentences, where the ear cannot time it), and the next audio is the reply. A frame or
    # two may leak after a killAudio (the module's pre-buffer survives it: playback.py)
    assert heard and heard[0].start < talk.speech_start, heard
    assert heard[0].end - heard[0].start < GREETING_S, heard
    went_on = [h for h in heard if talk.speech_start + 0.1 < h.start < talk.speech_end
               and h.end - h.start > 0.1]
    assert not went_on, heard
    barge = wait_for("the barge-in in the daemon's log",
                     lambda: _events(node, "conversation.bargein", call.uuid), 10)
    assert barge[0]["kind"]
    wait_for("call.end", lambda: _events(node, "call.end", call.uuid), 10)
    assert not _events(node, "conversation.stream_fallback", call.uuid)
