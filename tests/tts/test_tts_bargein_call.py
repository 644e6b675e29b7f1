"""Speech barge-in end to end over real sockets: the emulated caller talks over the bot;
its audio comes in on the mod_audio_fork WebSocket (ForkServer), Silero VAD measures it, the
barge-in table decides, the call's greenlet interrupts the FilePlayback (uuid_break all),
and the emulator's record of what the caller heard shows the cut. Noise does not cut."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import gevent
import numpy as np
import pytest
from tts_rig import CallRig, end_fork_conversation

from callctl.bargein import Bot, Decision, Observation, Signal, decide
from callctl.call.session import CallSession
from callctl.call.state import Trigger
from callctl.config import TurnsConfig
from callctl.esl.adapter import EslEvent
from callctl.media.audio import AudioFrame, Inbox
from callctl.media.forkserver import ForkServer
from callctl.media.vad import SpeechEnded, SpeechStarted, Vad
from callctl.metrics import Metrics
from callctl.playback import FilePlayback
from callctl.sim import corpus
from callctl.sim.switch import SimCall
from callctl.tts.espeak import EspeakSynthesizer
from callctl.tts.speaker import ChunkReady, Reply, ReplySynthesized, Speaker

DID = "+15551237777"
REPLY = ("Let me read you the terms of your plan. It includes unlimited calls and texts. "
         "Data is capped at twenty gigabytes per month. Roaming is charged separately. "
         "You can cancel at any time with thirty days notice.")


@dataclass(frozen=True)
class ResumeNow:
    """False interruption: say the cut sentence and the rest again."""


@dataclass(frozen=True)
class InterruptNow:
    """Posted by the media reader; applied by the call's own greenlet."""

    decided_at: float


class Bot_:
    def __init__(self, call: CallSession, forks: ForkServer, speaker: Speaker,
                 pdir: Path) -> None:
        self.call = call
        self.forks = forks
        self.speaker = speaker
        self.pdir = pdir
        self.handle: FilePlayback | None = None
        self.reply: Reply | None = None
        self.decisions: list[Decision] = []
        self.onsets: list[float] = []
        self.resumed: list[str] = []
        self.reader: gevent.Greenlet[..., None] | None = None

    def on_start(self, call: CallSession) -> None:
        url, inbox = self.forks.register(call.uuid)
        call.control.audio_fork_start(url, 8000)
        self.reader = gevent.spawn(self._listen, inbox)
        self.handle = FilePlayback(call.control, self.pdir, call_uuid=call.uuid)
        self.reply = self.speaker.say(REPLY, self.handle, post=call.inbox.put_control)
        call.transition(Trigger.SPEAK)

    def _listen(self, inbox: Inbox) -> None:
        vad = Vad(8000)
        cfg = TurnsConfig()
        onset: float | None = None
        asked = False
        while True:
            item = inbox.get(1.0)
            if not isinstance(item, AudioFrame) or self.handle is None:
                continue
            for ev in vad.feed(item.samples, item.at):
                if isinstance(ev, SpeechStarted):
                    onset = ev.at
                    self.onsets.append(ev.at)
                elif isinstance(ev, SpeechEnded) and onset is not None:
                    bot = Bot.CUT if self.handle.interrupted else Bot.SPEAKING
                    obs = Observation(bot, Signal.SPEECH_STOPPED,
                                      speech_ms=int(ev.speech_s * 1000))
                    decision = decide(obs, cfg).decision
                    self.decisions.append(decision)
                    if decision is Decision.RESUME:
                        self.call.inbox.put_control(ResumeNow())
                    onset = None
            if onset is not None and not self.handle.done and not asked:
                obs = Observation(Bot.SPEAKING, Signal.SPEECH,
                                  speech_ms=int((item.at - onset) * 1000))
                decision = decide(obs, cfg).decision
                if decision is Decision.INTERRUPT:
                    self.decisions.append(decision)
                    asked = True
                    self.call.inbox.put_control(InterruptNow(item.at))

    def on_event(self, event: object) -> None:
        assert self.handle is not None and self.reply is not None
        if isinstance(event, ChunkReady | ReplySynthesized):
            self.reply.deliver(event)
        elif isinstance(event, InterruptNow):
            self.handle.interrupt()
        elif isinstance(event, ResumeNow):
            again = self.reply.remaining_text()
            self.resumed.append(again)
            self.handle = FilePlayback(self.call.control, self.pdir, call_uuid=self.call.uuid)
            self.reply = self.speaker.say(again, self.handle, post=self.call.inbox.put_control)
        elif isinstance(event, EslEvent):
            self.handle.on_event(event.name, event.headers)

    def on_end(self, cause: str) -> None:
        end_fork_conversation(self.forks, self.call.uuid, self.handle, self.reader)


Rig: TypeAlias = CallRig[Bot_]


@pytest.fixture
def rig(tmp_path: Path, metrics: Metrics) -> Iterator[Rig]:
    speaker = Speaker(EspeakSynthesizer(), 8000, deadline_ms=5000)

    def make(call: CallSession, rig: Rig) -> Bot_:
        assert rig.forks is not None
        return Bot_(call, rig.forks, speaker, tmp_path / "playback")

    r = CallRig(metrics, DID, make, speed=1.0, forks=True)
    yield r
    r.close()


def bot_speaks(call: SimCall, _bot: Bot_) -> bool:
    return bool(call.heard())


def test_caller_speech_over_the_bot_cuts_it(rig: Rig) -> None:
    utt = corpus.utterance("Wait, I have a question about my bill.", voice="espeak")
    call, bot = rig.call(bot_speaks, timeout=10)
    gevent.sleep(0.5)
    first_frame, _end = call.channel.media.say(utt.samples)
    onset = first_frame + utt.speech_start_s
    with gevent.Timeout(5):
        while bot.handle is None or not bot.handle.interrupted:
            gevent.sleep(0.01)
    # The interrupted playback, kept: when the caller stops, the bot may already have
    # replaced bot.handle with the resumed one by the time the asserts below run.
    cut_handle = bot.handle
    gevent.sleep(0.3)
    heard = call.heard()
    # What was heard up to the cut; the resumed sentence may already follow it.
    heard = heard[:next(i for i, h in enumerate(heard) if h.interrupted) + 1]
    cut = heard[-1]
    assert cut.end > onset
    assert bot.decisions[0] is Decision.INTERRUPT
    total = sum(p.duration_s for p in cut_handle.pieces)
    assert cut.end - heard[0].start < total  # the rest of the reply was not played
    print(f"barge-in latency (caller speech onset -> last bot audio): "
          f"{(cut.end - onset) * 1000:.0f} ms")
    # Nothing was recognized (this bot has no recognizer): when the caller stops, the
    # interruption counts as false and the bot says the cut sentence again: no silence.
    with gevent.Timeout(8):
        while len(call.heard()) <= len(heard):
            gevent.sleep(0.02)
    assert bot.decisions[-1] is Decision.RESUME
    assert bot.resumed[0] and REPLY.endswith(bot.resumed[0])
    resumed = call.heard()[len(heard)]
    assert resumed.start > cut.end and resumed.source.endswith(".wav")
    call.hangup()
    assert call.wait_hangup(5)


def test_line_noise_over_the_bot_does_not_cut_it(rig: Rig) -> None:
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(8000) * 600).astype(np.int16)  # 1 s of hiss, about -35 dBFS
    call, bot = rig.call(bot_speaks, timeout=10)
    call.channel.media.say(noise)
    gevent.sleep(1.5)
    assert bot.handle is not None and not bot.handle.interrupted
    assert Decision.INTERRUPT not in bot.decisions
    assert not any(h.interrupted for h in call.heard())
    call.hangup()
    assert call.wait_hangup(5)
