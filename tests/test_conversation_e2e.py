"""The whole product on one call: emulated FreeSWITCH → daemon (outbound ESL) → mod_audio_fork
→ VAD/ASR (real Whisper) → endpointing → front-desk flow → TTS (real espeak/Piper) → playback
→ what the emulated caller heard. Real sockets, real Redis, real engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from conversation_rig import DID, Rig

from callctl.sim import callers


@pytest.fixture
def rig(tmp_path: Path, redis_url: str, whisper_engine: Any) -> Iterator[Rig]:
    r = Rig(tmp_path, redis_url, whisper_engine)
    yield r
    r.close()


@pytest.mark.slow
def test_caller_asks_for_billing_and_is_transferred(rig: Rig) -> None:
    caller = callers.Caller([
        callers.wait_answer(),
        callers.wait_for_bot(silence_s=0.6),
        callers.say("I would like to talk to billing please.", voice="piper"),
        callers.wait_for_bot(silence_s=0.6),
        callers.pause(1.0),
        callers.hangup(),
    ])
    call = rig.sw.place_call(DID, "+15557654321", "PCMU", script=caller)
    assert call.wait_answered(10)
    cause = call.wait_hangup(40)
    heard = call.heard()
    # the daemon transferred the call to the billing queue's extension (it stayed up there
    # until the caller hung up)
    assert call.channel.profile["Destination-Number"] == "7001"
    assert len(heard) >= 2, f"expected greeting and reply, heard {heard}"
    # the caller heard the reply after it finished speaking
    latencies = [lat for lat in callers.turn_latencies(caller.log, heard) if lat is not None]
    assert latencies, caller.log
    assert cause is not None
    with gevent.Timeout(10):                 # the daemon finishes the call, then the store
        while len(rig.daemon.registry):
            gevent.sleep(0.05)
    assert rig.store.flush(5)
    rec = rig.store.get_call(call.uuid)
    assert rec is not None and rec.state == "ended"
    turns = rig.store.get_turns(call.uuid)
    assert turns and "billing" in turns[0].transcript.lower()
    assert turns[0].latency_ms is not None and turns[0].latency_ms > 0
    sample = rig.metrics.registry.get_sample_value
    assert (sample("callctl_turn_latency_seconds_count", {"route": "front_desk"}) or 0) >= 1
    for hop in ("endpoint", "asr_final", "dialog", "tts_first_chunk", "playback_start",
                "play_out"):
        assert (sample("callctl_hop_seconds_count", {"hop": hop}) or 0) >= 1, hop
    assert sample("callctl_calls_total", {"route": "front_desk", "outcome": "transferred",
                                          "cause": "TRANSFERRED"}) == 1
