"""Stream mode over real sockets: the emulator's jambonz mod_audio_fork in bidirectional
streaming mode connects to callctl's ForkServer; StreamPlayback sends paced L16 frames and
marks back on that WebSocket; the emulator plays them to the caller and echoes the marks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import gevent
import pytest
from tts_rig import CallRig, end_fork_conversation

from callctl.call.session import CallSession
from callctl.call.state import Trigger
from callctl.media.audio import ForkConnected, ForkText, Inbox
from callctl.media.forkserver import ForkServer
from callctl.metrics import Metrics
from callctl.playback import StreamPlayback
from callctl.sim.switch import SimCall
from callctl.tts.espeak import EspeakSynthesizer
from callctl.tts.speaker import Reply, Speaker

DID = "+15551238888"
REPLY = "Hello from the stream. It goes back on the fork. Goodbye."


class StreamTalker:
    """Starts a bidirectional jambonz fork at answer and speaks REPLY on it."""

    def __init__(self, call: CallSession, forks: ForkServer, speaker: Speaker) -> None:
        self.call = call
        self.forks = forks
        self.speaker = speaker
        self.handle: StreamPlayback | None = None
        self.reply: Reply | None = None
        self.reader: gevent.Greenlet[..., None] | None = None

    def on_start(self, call: CallSession) -> None:
        url, inbox = self.forks.register(call.uuid)
        # jambonz 10-slot form: bidirectional audio enabled, streamed, at 8000 Hz.
        call.conn.send(f"api uuid_audio_fork {call.uuid} start {url} mono 8k callctl '{{}}' "
                       "true true 8000")
        self.reader = gevent.spawn(self._read, inbox)
        call.transition(Trigger.SPEAK)

    def _read(self, inbox: Inbox) -> None:
        uuid = self.call.uuid
        while True:
            item = inbox.get(1.0)
            if isinstance(item, ForkConnected) and self.handle is None:
                self.handle = StreamPlayback(
                    lambda pcm: self.forks.send_binary(uuid, pcm),
                    lambda text: self.forks.send_text(uuid, text),
                    8000, call_uuid=uuid, mark_grace_s=60)  # done only by real marks
                self.reply = self.speaker.say(REPLY, self.handle)
            elif isinstance(item, ForkText) and self.handle is not None:
                self.handle.on_fork_message(json.loads(item.text))

    def on_event(self, event: object) -> None:
        pass

    def on_end(self, cause: str) -> None:
        end_fork_conversation(self.forks, self.call.uuid, self.handle, self.reader)


StreamRig: TypeAlias = CallRig[StreamTalker]


@pytest.fixture
def rig(metrics: Metrics) -> Iterator[StreamRig]:
    speaker = Speaker(EspeakSynthesizer(), 8000, deadline_ms=5000)

    def make(call: CallSession, rig: StreamRig) -> StreamTalker:
        assert rig.forks is not None
        return StreamTalker(call, rig.forks, speaker)

    r = CallRig(metrics, DID, make, speed=1.0, event_delay_s=0.002, forks=True)
    yield r
    r.close()


def ready(_call: SimCall, talker: StreamTalker) -> bool:
    return talker.handle is not None


def test_streamed_reply_is_heard_and_marks_come_back(rig: StreamRig, tmp_path: Path) -> None:
    call, talker = rig.call(ready)
    handle = talker.handle
    assert handle is not None
    assert handle.wait(20), ([p.state for p in handle.pieces], handle.errors, handle.cmd_sent)
    assert not handle.interrupted and len(handle.pieces) == 3 and not handle.errors
    assert all(p.state == "done" for p in handle.pieces)
    heard = [h for h in call.heard() if h.source == "stream"]
    assert heard and not any(h.interrupted for h in heard)
    total = sum(p.duration_s for p in handle.pieces)
    played = sum(h.end - h.start for h in heard)
    assert 0.6 * total < played < 1.4 * total + 0.3
    call.hangup()
    assert call.wait_hangup(5)


def test_interrupt_kills_the_streamed_audio(rig: StreamRig) -> None:
    call, talker = rig.call(ready)
    handle = talker.handle
    assert handle is not None
    with gevent.Timeout(5):
        while not call.heard():
            gevent.sleep(0.01)
    gevent.sleep(0.2)
    assert handle.interrupt()
    gevent.sleep(0.3)
    heard = call.heard()
    assert heard[-1].source == "stream" and heard[-1].interrupted
    end = heard[-1].end
    gevent.sleep(0.3)
    assert call.heard()[-1].end == end  # nothing more is played after killAudio
    assert talker.reply is not None and talker.reply.cancelled
    call.hangup()
    assert call.wait_hangup(5)
