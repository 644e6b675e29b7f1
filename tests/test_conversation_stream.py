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
        callers.say("Billing, please.", voice="piper"),
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
        callers.barge_in("Technical support, please.", after_s=1.0),
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
