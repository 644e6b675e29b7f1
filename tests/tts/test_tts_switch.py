"""Speaking into an emulated call over real sockets: the daemon's OutboundServer and
CallSession, callctl.sim's Switch, Piper/espeak, FilePlayback through CallControl, and the
barge-in table. What the caller heard comes from the emulator's own record."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import gevent
import pytest
from tts_rig import CallRig, wait_for

from callctl.bargein import Bot, Decision, Observation, Signal, decide
from callctl.call.session import CallSession
from callctl.call.state import Trigger
from callctl.call.timeline import Turn
from callctl.config import TurnsConfig
from callctl.esl.adapter import EslEvent
from callctl.metrics import Metrics
from callctl.playback import FilePlayback, PlaybackTransport
from callctl.tts.espeak import EspeakSynthesizer
from callctl.tts.speaker import ChunkReady, Reply, ReplySynthesized, Speaker

DID = "+15551239999"
REPLY = ("Thanks for calling Acme. Your order shipped on Monday. It should arrive by Thursday. "
         "You will get a text message when it is out for delivery.")


class Sweeper:
    """The call's real transport, with a tmp cleaner that deletes the first file just before
    FreeSWITCH is told to play it."""

    def __init__(self, control: PlaybackTransport) -> None:
        self.control = control
        self.swept = False

    def play(self, path: str, event_uuid: str) -> None:
        if not self.swept:
            self.swept = True
            os.unlink(path)
        self.control.play(path, event_uuid)

    def stop_playback(self) -> None:
        self.control.stop_playback()

    def toggle_pause(self) -> bool:
        return self.control.toggle_pause()


class Talker:
    """A minimal conversation: speak one reply at answer; DTMF barges in per the policy."""

    def __init__(self, call: CallSession, speaker: Speaker, pdir: Path, text: str) -> None:
        self.call = call
        self.speaker = speaker
        self.pdir = pdir
        self.text = text
        self.turn = Turn(0)
        self.handle: FilePlayback | None = None
        self.reply: Reply | None = None
        self.verdicts: list[Decision] = []
        self.ended = ""
        self.sweep_first = False

    def on_start(self, call: CallSession) -> None:
        transport = Sweeper(call.control) if self.sweep_first else call.control
        self.handle = FilePlayback(transport, self.pdir, turn=self.turn, call_uuid=call.uuid)
        self.turn.mark("dialog")
        self.reply = self.speaker.say(self.text, self.handle, self.turn,
                                      post=call.inbox.put_control)
        call.transition(Trigger.SPEAK)

    def on_event(self, event: object) -> None:
        assert self.handle is not None and self.reply is not None
        if isinstance(event, ChunkReady | ReplySynthesized):
            self.reply.deliver(event)
        elif isinstance(event, EslEvent):
            self.handle.on_event(event.name, event.headers)
            if event.name == "DTMF":
                bot = Bot.SILENT if self.handle.done else Bot.SPEAKING
                verdict = decide(Observation(bot, Signal.DTMF), TurnsConfig())
                self.verdicts.append(verdict.decision)
                if verdict.decision is Decision.INTERRUPT:
                    self.handle.interrupt()

    def on_end(self, cause: str) -> None:
        self.ended = cause
        if self.handle is not None:
            self.handle.close()


Rig: TypeAlias = CallRig[Talker]


@pytest.fixture
def sweep_first() -> list[bool]:
    """Set ``[True]`` before placing a call: that call's first file vanishes before it plays."""
    return [False]


@pytest.fixture
def rig(tmp_path: Path, metrics: Metrics, sweep_first: list[bool]) -> Iterator[Rig]:
    speaker = Speaker(EspeakSynthesizer(), 8000, deadline_ms=5000, metrics=metrics)

    def make(call: CallSession, _rig: Rig) -> Talker:
        t = Talker(call, speaker, tmp_path / "playback", REPLY)
        t.sweep_first = sweep_first[0]
        return t

    r = CallRig(metrics, DID, make, speed=4.0, event_delay_s=0.002)
    yield r
    r.close()


def test_reply_is_heard_piece_by_piece(rig: Rig) -> None:
    call, talker = rig.call()
    assert talker.handle is not None and talker.reply is not None
    wait_for(lambda: talker.handle is not None and talker.handle.done, 20)
    heard = call.heard()
    assert [h.source for h in heard] == [str(p.path) for p in talker.handle.pieces]
    assert len(heard) == 4 and not any(h.interrupted for h in heard)
    # Each piece played about as long as its audio (the emulator runs 4x real time).
    for h, piece in zip(heard, talker.handle.pieces, strict=True):
        played = (h.end - h.start) * 4
        assert 0.5 * piece.duration_s < played < 1.5 * piece.duration_s + 0.2
    marks = talker.turn.marks
    assert marks["dialog"] <= marks["tts_first_chunk"] <= marks["playback_cmd"] \
        <= marks["playback_started"]
    assert not talker.handle.interrupted and talker.handle.errors == []
    assert list(talker.pdir.iterdir()) == []
    call.hangup()
    assert call.wait_hangup(5)


def test_dtmf_barges_in_and_the_caller_hears_the_cut(rig: Rig) -> None:
    call, talker = rig.call()
    wait_for(lambda: call.heard())
    call.dtmf("1")
    wait_for(lambda: talker.handle is not None and talker.handle.interrupted, 5)
    gevent.sleep(0.3)
    heard = call.heard()
    assert heard[-1].interrupted
    assert len(heard) < 4  # the queued sentences were flushed (uuid_break all)
    assert talker.verdicts == [Decision.INTERRUPT]
    assert "playback_interrupted" in talker.turn.marks
    assert talker.reply is not None and talker.reply.cancelled
    assert list(talker.pdir.iterdir()) == []
    call.hangup()
    assert call.wait_hangup(5)


def test_dtmf_after_the_reply_does_not_interrupt(rig: Rig) -> None:
    call, talker = rig.call()
    wait_for(lambda: talker.handle is not None and talker.handle.done, 20)
    call.dtmf("2")
    wait_for(lambda: talker.verdicts, 5)
    assert talker.handle is not None
    assert talker.verdicts == [Decision.IGNORE] and not talker.handle.interrupted
    call.hangup()
    assert call.wait_hangup(5)


def test_hangup_mid_sentence_leaves_nothing_behind(rig: Rig) -> None:
    call, talker = rig.call()
    wait_for(lambda: call.heard())
    call.hangup()
    assert call.wait_hangup(5)
    wait_for(lambda: talker.ended, 5)
    assert talker.reply is not None and talker.reply.cancelled
    assert talker.reply.greenlet is not None and talker.reply.greenlet.dead
    assert list(talker.pdir.iterdir()) == []


def test_missing_file_at_the_switch_skips_one_sentence_only(rig: Rig,
                                                            sweep_first: list[bool]) -> None:
    sweep_first[0] = True
    call, talker = rig.call()
    wait_for(lambda: talker.handle is not None and talker.handle.done, 20)
    assert talker.handle is not None
    assert len(talker.handle.errors) == 1 and "FILE NOT FOUND" in talker.handle.errors[0]
    heard = call.heard()
    assert [h.source for h in heard] == [str(p.path) for p in talker.handle.pieces[1:]]
    assert list(talker.pdir.iterdir()) == []
    call.hangup()
    assert call.wait_hangup(5)
