"""Barge-in glue: applies ``callctl.bargein``'s policy table to the call's playback handle.

How this works: caller speech over the bot is judged by ``callctl.bargein.decide`` (the policy
table stays there; this module only observes and acts). ``SpeechStarted`` over a speaking bot
asks the table at once (pause-then-decide: the first evidence of speech may pause the bot);
while the caller speaks, ``BARGEIN_TIMER`` asks again every 40 ms (after
``turns.bargein_min_speech_ms`` when the bot was not paused) with the voiced time so far and
the partial transcript; once the speech ended, it is judged once more with the recognizer's
speculative final words (Whisper has no partials), or the committed turn's words. A pause
is bounded by ``turns.bargein_pause_max_ms`` (``PAUSE_TIMER``). The decision is applied to
the handle: ``PAUSE``/``UNPAUSE`` (the reply continues where it stopped), ``INTERRUPT`` (the
reply is cut; a cut reply that ends the dialog is carried out at once) or ``RESUME`` (a false
interruption: the cut sentence and the rest of the reply are said again). DTMF over the bot
is judged too (``Signal.DTMF``). The backchannels the dialog expects as an answer now are
not backchannels for the table (``_turns_cfg``).

Contract: ``BargeIn`` is a mixin of ``callctl.conversation.Conversation``; its methods run in
the call's greenlet and use the conversation's state and hooks declared below.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from callctl.bargein import Bot, Decision, Observation, Signal, decide, words_of
from callctl.call.session import CallSession
from callctl.config import Config, TurnsConfig
from callctl.dialog.base import DialogEngine, Hangup, Transfer
from callctl.media.vad import SpeechEnded, SpeechStarted, Vad
from callctl.playback import PlaybackError, PlaybackHandle

if TYPE_CHECKING:
    from callctl.call.timeline import Turn
    from callctl.conversation import Utterance
    from callctl.dialog.pump import Pump
    from callctl.voice import Voice

BARGEIN_TIMER = "bargein"
PAUSE_TIMER = "bargein_pause"   # the bound of a pause-then-decide pause


class BargeIn:
    """The barge-in half of a ``Conversation`` (module docstring)."""

    # the conversation's state this glue reads and writes (set in ``Conversation.__init__``)
    v: Voice
    call: CallSession
    cfg: Config
    log: Any
    dialog: DialogEngine | None
    vad: Vad | None
    handle: PlaybackHandle | None
    utt: Utterance | None
    cut: PlaybackHandle | None       # the handle the caller just cut
    played: PlaybackHandle | None    # the handle whose end was handled
    pump: Pump | None
    pending: list[Transfer | Hangup]
    partial: str
    onset: float | None
    judge_at_final: tuple[int, float] | None

    if TYPE_CHECKING:   # the conversation's hooks this glue calls
        def _check_played(self, force: bool = False) -> None: ...
        def _reply_played(self) -> None: ...
        def _next_sentence(self) -> None: ...
        def _open_utterance(self, turn: Turn | None, interruptible: bool,
                            pump: Pump | None = None) -> Utterance: ...

    def _bot(self) -> Bot:
        h = self.handle
        if h is not None and h.interrupted and self.cut is h:
            return Bot.CUT
        if h is None or h.done:
            return Bot.SILENT
        return Bot.PAUSED if h.paused else Bot.SPEAKING

    def _talking(self) -> bool:
        """The bot holds the floor: speaking, or paused while a barge-in is decided."""
        return self._bot() in (Bot.SPEAKING, Bot.PAUSED)

    def _obs(self, bot: Bot, signal: Signal, speech_ms: int = 0,
             partial: str = "") -> Observation:
        h = self.handle
        return Observation(bot, signal, self._interruptible(), speech_ms, partial,
                           pausable=h is not None and h.can_pause)

    def _speech_started(self, ev: SpeechStarted) -> None:
        self.onset = ev.at
        self.partial = ""
        self.judge_at_final = None
        bot = self._bot()
        if bot is Bot.SPEAKING:
            # pause-then-decide: the first evidence of speech pauses the bot at once
            if self._judge(self._obs(bot, Signal.SPEECH), ev.at) is Decision.PAUSE:
                self.call.call_later(0.04, BARGEIN_TIMER)
            else:
                self.call.call_later(self.cfg.turns.bargein_min_speech_ms / 1000,
                                     BARGEIN_TIMER)
        elif bot is Bot.PAUSED:                   # speech again while still paused
            self.call.call_later(0.04, BARGEIN_TIMER)

    def _speech_ended(self, ev: SpeechEnded) -> None:
        self.call.cancel_timer(BARGEIN_TIMER)
        if self._bot() is not Bot.SILENT and self.onset is not None:
            # judged once more with the recognizer's words (the speculative final follows)
            self.judge_at_final = (int(getattr(ev, "speech_s", 0.0) * 1000), self.onset)
        self.onset = None

    def _judge_stopped(self, text: str) -> None:
        """The caller's speech over the bot ended: judge it with the recognizer's words."""
        if self.judge_at_final is None:
            return
        (speech_ms, onset), self.judge_at_final = self.judge_at_final, None
        bot = self._bot()
        if bot is not Bot.SILENT:
            self._judge(self._obs(bot, Signal.SPEECH_STOPPED, speech_ms, text), onset)

    def _bargein_timer(self, name: str) -> None:
        """``BARGEIN_TIMER``: judge the caller's speech again (every 40 ms while undecided);
        ``PAUSE_TIMER``: the pause bound ran out."""
        if name == BARGEIN_TIMER and self.onset is not None and self._talking():
            speech_ms = self._voiced_ms()
            if self._judge(self._obs(self._bot(), Signal.SPEECH, speech_ms,
                                     self.partial)) in (Decision.WAIT, Decision.PAUSE):
                self.call.call_later(0.04, BARGEIN_TIMER)
        elif name == PAUSE_TIMER and self._bot() is Bot.PAUSED:
            self._judge(self._obs(Bot.PAUSED, Signal.PAUSE_TIMEOUT, self._voiced_ms(),
                                  self.partial))

    def _voiced_ms(self) -> int:
        """How long the caller has spoken since the onset, up to the VAD's last voiced
        window: the hang the VAD waits out before it calls the speech over is silence, not
        speech (counting it would make every 0.4 s "mhm" look 0.6 s long)."""
        if self.onset is None:
            return 0
        vad = self.vad
        last = vad.last_voiced_end if vad is not None and vad.speaking else time.monotonic()
        return int(max(0.0, last - self.onset) * 1000)

    def _interruptible(self) -> bool:
        return self.handle.interruptible if self.handle is not None else True

    def _judge(self, obs: Observation, onset: float | None = None) -> Decision:
        verdict = decide(obs, self._turns_cfg())
        if verdict.decision is Decision.PAUSE and self.handle is not None:
            self._pause(verdict.why, onset if onset is not None else self.onset)
        elif verdict.decision is Decision.UNPAUSE and self.handle is not None:
            self._unpause(verdict.why)
        elif verdict.decision is Decision.INTERRUPT and self.handle is not None:
            paused_at = self.handle.paused_at     # the caller heard the bot stop then
            self.call.cancel_timer(PAUSE_TIMER)
            try:
                cut = self.handle.interrupt()
            except PlaybackError as e:         # the stop command failed; the reply is over
                self.log.warning("conversation.stop_failed", error=str(e))
                cut = True
            if cut:
                self.cut = self.handle
                kind = "dtmf" if obs.signal is Signal.DTMF else "speech"
                self.v.metrics.bargeins.labels(kind=kind).inc()
                onset = onset if onset is not None else self.onset
                if onset is not None and kind == "speech":
                    stopped = paused_at if paused_at is not None else time.monotonic()
                    self.v.metrics.bargein_latency.labels(route=self.call.route_label).observe(
                        max(0.0, stopped - onset))
                self.log.info("conversation.bargein", kind=kind, rule=verdict.rule,
                              why=verdict.why, paused=paused_at is not None)
                self._after_cut()
        elif verdict.decision is Decision.RESUME:
            self.v.metrics.bargeins.labels(kind="false").inc()
            self.log.info("conversation.resume", why=verdict.why)
            self._resume()
        return verdict.decision

    def _pause(self, why: str, onset: float | None) -> None:
        """Pause the reply where it is (pause-then-decide); the pause is bounded by
        ``turns.bargein_pause_max_ms`` (``PAUSE_TIMER``). A refused pause leaves the bot
        speaking: the policy then decides as for a playback that cannot pause."""
        h = self.handle
        assert h is not None
        try:
            if not h.pause():
                return
        except PlaybackError as e:
            self.log.warning("conversation.pause_failed", error=str(e))
            return
        self.call.call_later(self.cfg.turns.bargein_pause_max_ms / 1000, PAUSE_TIMER)
        self.v.metrics.bargeins.labels(kind="paused").inc()
        self.log.info("conversation.paused", why=why,
                      after_ms=None if onset is None or h.paused_at is None
                      else round((h.paused_at - onset) * 1000))

    def _unpause(self, why: str) -> None:
        """The caller did not take the floor: the paused reply continues where it stopped."""
        h = self.handle
        assert h is not None
        self.call.cancel_timer(PAUSE_TIMER)
        self.call.cancel_timer(BARGEIN_TIMER)
        held = time.monotonic() - h.paused_at if h.paused_at is not None else 0.0
        try:
            h.unpause()
        except PlaybackError as e:             # cannot continue it: stop it, never hang
            self.log.warning("conversation.unpause_failed", error=str(e))
            try:
                h.interrupt()
            except PlaybackError:
                pass
            self._check_played(force=True)
            return
        self.v.metrics.bargeins.labels(kind="unpaused").inc()
        self.log.info("conversation.unpaused", why=why, paused_ms=round(held * 1000))

    def _after_cut(self) -> None:
        """A cut reply that ends the dialog (transfer, hangup) is carried out at once: the
        caller has nothing left to say to this dialog, and must not wait in silence."""
        h = self.handle
        over = self.dialog is not None and self.dialog.listen is None
        if h is not None and self.cut is h and self.pump is None and (self.pending or over):
            self.played = h
            self._reply_played()

    def _resume(self) -> None:
        """Say the cut sentence and the rest of the reply again (a false interruption)."""
        old = self.utt
        self.cut = None
        if old is None or old.handle is not self.handle:
            return
        again = old.remaining()
        if not again and not (self.pump is not None and not old.complete):
            self._check_played(force=True)
            return
        utt = self._open_utterance(old.turn, old.handle.interruptible, old.pump)
        utt.queue.extend(again)
        utt.complete = old.complete
        self._next_sentence()

    def _turns_cfg(self) -> TurnsConfig:
        """``turns`` for the barge-in policy, without the backchannels the dialog expects as
        an answer now ("yes", "okay" at a yes/no question are words, not acknowledgements)."""
        listen = self.dialog.listen if self.dialog is not None else None
        expected = {w for p in (listen.grammar or ()) for w in words_of(p)} if listen else set()
        cfg = self.cfg.turns
        if not expected:
            return cfg
        keep = [b for b in cfg.backchannels if not set(words_of(b)) & expected]
        return cfg if len(keep) == len(cfg.backchannels) else \
            dataclasses.replace(cfg, backchannels=keep)

    def _real_words(self, text: str) -> list[str]:
        bc = {w for p in self._turns_cfg().backchannels for w in words_of(p)}
        return [w for w in words_of(text) if w not in bc]
