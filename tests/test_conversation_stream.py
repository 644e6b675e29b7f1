"""Stream playback mode end to end: the reply is streamed back on the jambonz bidirectional
fork (paced L16 frames + marks), the emulator plays it to the caller, barge-in = killAudio."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation_rig import Rig

from callctl import config
from callctl.sim import callers

# With the Piper and Whisper packages installed on 2026-12-08 "uh huh" is heard as words, so it
# cuts instead of pausing, as its file-mode twin in test_conversation_behaviour does on the
# session's base commit (c6e996a) too. Judging
# backchannels without the recognizer's words is issue 14.
WHISPER_DRIFT = pytest.mark.xfail(reason="environment drift: Piper/Whisper hear this utterance "
                                  "differently (fails on the base commit too)", strict=False)



@pytest.fixture
def rig(tmp_path: Path, redis_url: str, whisper_engine: Any) -> Iterator[Rig]:
    r = Rig(tmp_path, redis_url, whisper_engine,
            playback=config.PlaybackConfig(mode="stream", dir=str(tmp_path / "playback")))
    yield r
    r.close()


@pytest.mark.slow
def test_stream_mode_greeting_and_reply_then_transfer(rig: Rig) -> None:
    call, caller = rig.call([
        callers.wait_for_bot(silence_s=0.6),
        callers.say("Billing please.", voice="piper"),
        callers.wait_for_bot(silence_s=0.6),
        callers.pause(1.0),
    ])
    rig.finish(call)
    heard = call.heard()
    assert len(heard) >= 2, heard
    assert all(h.source == "stream" for h in heard), heard
    # the greeting played out (only the reply's silent tail may be cut by the transfer)
    assert not heard[0].interrupted, heard
    assert rig.said[0].startswith("Thank you for calling Acme")
    assert rig.said[-1] == "Connecting you to billing."
    assert rig.transfers(call.uuid) == ["7001"]
    # marks came back: the greeting was known to have played out, so the call listened
    assert [lat for lat in callers.turn_latencies(caller.log, heard) if lat is not None]
    assert not rig.playback_files()
    # "started" is when the emulated module played (a mark echo), not the first frame sent:
    # the play_out hop (first frame -> heard) is no longer a constant zero
    assert rig.sample("callctl_hop_seconds_count", {"hop": "play_out"}) >= 2
    assert rig.sample("callctl_hop_seconds_sum", {"hop": "play_out"}) > 0
    assert rig.store.flush(5)
    turns = rig.store.get_turns(call.uuid)
    assert turns and all(t.latency_ms is not None and t.latency_ms > 0 for t in turns), turns


@pytest.mark.slow
def test_stream_mode_bargein_kills_the_streamed_audio(rig: Rig) -> None:
    call, caller = rig.call([
        callers.barge_in("Technical support please.", after_s=1.0),
        callers.wait_for_bot(silence_s=0.6),
        callers.pause(1.0),
    ])
    rig.finish(call)
    heard = call.heard()
    assert heard and heard[0].interrupted, heard        # killAudio cut the greeting
    lat = [x for x in callers.barge_in_latencies(caller.log, heard) if x is not None]
    assert lat and lat[0] < 3.0, (lat, caller.log)
    assert rig.said[-1] == "Connecting you to technical support."
    assert rig.transfers(call.uuid) == ["7002"]
    assert rig.sample("callctl_bargeins_total", {"kind": "speech"}) == 1


@pytest.mark.slow
@WHISPER_DRIFT
def test_stream_mode_backchannel_pauses_and_the_reply_goes_on_from_there(rig: Rig) -> None:
    """Pause-then-decide in stream mode: "uh huh" over the greeting pauses it (killAudio,
    the pacer holds the unheard audio), the speech ends with only a backchannel, and the
    greeting goes on from where the caller stopped hearing it: the caller hears it once,
    about as long as when nobody talks over it (nothing lost, nothing said twice)."""
    plain, _ = rig.call([callers.wait_for_bot(silence_s=0.6), callers.hangup()])
    rig.finish(plain)
    call, _ = rig.call([callers.barge_in("Uh huh.", after_s=1.0),
                        callers.wait_for_bot(silence_s=0.6), callers.hangup()])
    rig.finish(call)
    heard = call.heard()
    # killAudio stopped it; the audio that came back continued it: the caller heard a pause
    assert heard[0].paused and not heard[0].interrupted and len(heard) >= 2, heard
    whole = sum(h.end - h.start for h in plain.heard())
    assert sum(h.end - h.start for h in heard) == pytest.approx(whole, abs=0.15), (
        heard, plain.heard())
    assert len(rig.said) == 2 and rig.said[0] == rig.said[1], rig.said  # once per call
    assert rig.sample("callctl_bargeins_total", {"kind": "paused"}) == 1
    assert rig.sample("callctl_bargeins_total", {"kind": "unpaused"}) == 1
    assert rig.sample("callctl_bargeins_total", {"kind": "false"}) == 0
    assert rig.sample("callctl_bargeins_total", {"kind": "speech"}) == 0


# -- the channel must write frames for the stream to be heard (send_silence_when_idle) ------

def _greeting_heard(rig: Rig) -> tuple[Any, list[Any]]:
    call, _ = rig.call([callers.wait_for_bot(silence_s=0.6), callers.hangup()])
    rig.finish(call)
    return call, call.heard()


@pytest.mark.slow
def test_stream_mode_sets_idle_frames_before_answering(rig: Rig) -> None:
    """The emulated dialplan sets no send_silence_when_idle: the daemon sets it (-1) before
    the answer, so the parked channel writes frames and the streamed greeting is heard."""
    call, heard = _greeting_heard(rig)
    assert heard and all(h.source == "stream" for h in heard), heard
    assert call.channel.variables.get("send_silence_when_idle") == "-1"
    assert rig.sample("callctl_playback_fallbacks_total", {"reason": "marks_missing"}) == 0
    assert rig.sample("callctl_playback_marks_missing_total") == 0


@pytest.mark.slow
def test_without_idle_frames_marks_never_come_back_and_the_call_falls_back_to_file(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon that does not set the variable (what the real switch showed): nothing of the
    stream is heard and no mark comes back; the reply ends by the mark-wait bound, is counted,
    and the call falls back to file playback, which says the greeting again from the start."""
    from callctl.call.session import CallSession

    monkeypatch.setattr(CallSession, "_set_idle_frames",     # believes it set it
                        lambda self, in_time: setattr(self, "writes_idle_frames", True))
    _, heard = _greeting_heard(rig)
    assert heard and heard[0].source != "stream", heard       # a WAV played with sendmsg
    assert not [h for h in heard if h.source == "stream"], heard
    assert rig.said[0] == rig.said[1] and rig.said[0].startswith("Thank you for calling Acme")
    assert rig.sample("callctl_playback_marks_missing_total") == 1
    assert rig.sample("callctl_playback_fallbacks_total", {"reason": "marks_missing"}) == 1


@pytest.mark.slow
def test_a_call_answered_before_the_socket_uses_file_playback_at_once(rig: Rig) -> None:
    """Answered by the dialplan without send_silence_when_idle: the park loop has read it
    already, too late to set: the call is played with files from its first prompt."""
    rig.dialplan["+15551230000"] = f"answer; {rig.dialplan['+15551230000']}"
    _, heard = _greeting_heard(rig)
    assert heard and not [h for h in heard if h.source == "stream"], heard
    assert len(rig.said) == 1
    assert rig.sample("callctl_playback_fallbacks_total", {"reason": "no_idle_frames"}) == 1
    assert rig.sample("callctl_playback_marks_missing_total") == 0
