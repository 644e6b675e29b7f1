"""The emulator's mod_audio_fork client (callctl.sim) streams real speech in real time to our
ForkServer; the Listener (real VAD, real Vosk) hears each turn. Server messages go back."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import pytest

from callctl.asr.base import FinalTranscript, PartialTranscript
from callctl.asr.vosk import VoskEngine
from callctl.call.timeline import Turn
from callctl.media.audio import ForkClosed, ForkConnected
from callctl.media.forkserver import ForkServer
from callctl.media.listener import Listener
from callctl.media.vad import SpeechStarted, Vad
from callctl.sim.corpus import utterance
from callctl.sim.media import new_media
from callctl.turns import EndpointPolicy, TurnCommitted

pytestmark = pytest.mark.slow  # real-time audio (~5 s) and the Vosk model

UUID = "e3b0c442-98fc-4c14-9afb-f4c8996fb924"


@dataclass
class Signals:
    """The channel side the emulator's media half reports to (records CUSTOM events)."""

    uuid: str = UUID
    customs: list[tuple[str, str | None]] = field(default_factory=list)

    def fire_custom(self, subclass: str, body: str | None) -> None:
        self.customs.append((subclass, body))

    def fire_event(self, name: str, headers: dict[str, str]) -> None:
        pass

    def dtmf(self, digit: str, duration_samples: int = 2000) -> None:
        pass

    def caller_hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        pass

    def is_up(self) -> bool:
        return True


@pytest.mark.parametrize("variant", ["jambonz", "drachtio"])
def test_emulated_switch_streams_speech_in_real_time(
        fork_server: ForkServer, vosk_engine: VoskEngine, tmp_path: Any, variant: str) -> None:
    url, inbox = fork_server.register(UUID)
    events: list[Any] = []
    rec = vosk_engine.acquire()
    turns = iter(range(100))
    listener = Listener(inbox, rec, Vad(8000, hang_ms=120), EndpointPolicy(), events.append,
                        lambda: Turn(next(turns)), call_uuid=UUID)
    g = gevent.spawn(listener.run)
    sig = Signals()
    media = new_media(sig, fork_variant=variant, temp_dir=str(tmp_path))
    try:
        media.start()
        meta = json.dumps({"uuid": UUID}, separators=(",", ":"))
        assert media.fork_api(["start", url, "mono", "8k", "callctl", meta]).startswith("+OK")
        utts = [utterance("Technical support please."), utterance("Yes.")]   # no comma pause
        said = []
        for u in utts:
            said.append(media.say(u.samples))
            gevent.sleep(u.duration_s + 0.6)  # let the turn end before the next one
        deadline = time.monotonic() + 10
        while sum(isinstance(e, TurnCommitted) for e in events) < 2 \
                and time.monotonic() < deadline:
            gevent.sleep(0.05)
        # a server message reaches the switch as the module's CUSTOM event
        assert fork_server.send_text(UUID, '{"type":"killAudio"}')
        gevent.sleep(0.2)
    finally:
        media.stop()
        deadline = time.monotonic() + 3
        while not any(isinstance(e, ForkClosed) for e in events) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        listener.stop()
        g.join(timeout=2)
        vosk_engine.release(rec)
        fork_server.unregister(UUID)

    connected = [e for e in events if isinstance(e, ForkConnected)]
    assert connected and connected[0].metadata == {"uuid": UUID}
    assert ("mod_audio_fork::connect", None) in sig.customs
    assert any(s == "mod_audio_fork::kill_audio" for s, _ in sig.customs)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    committed = [e for e in events if isinstance(e, TurnCommitted)]
    assert len(started) == 2 and len(committed) == 2
    assert any(isinstance(e, PartialTranscript) for e in events)
    assert sum(isinstance(e, FinalTranscript) and e.speculative for e in events) == 2
    bounds = [(t0 + u.speech_start_s, t0 + u.speech_end_s) for u, (t0, _e) in zip(utts, said,
                                                                               strict=True)]
    for (begin, end), s, c in zip(bounds, started, committed, strict=True):
        assert begin - 0.2 < s.at < end          # heard as speech while it was said
        assert end < c.at                        # committed after its speech
    assert isinstance(events[-1], ForkClosed) and events[-1].code == 1000
