"""The cloud-style pipeline, built from callctl's own engines, for side-by-side benchmarks.

What a typical cloud voice bot does with each caller turn, one step after the other:

1. record the whole utterance (no streaming recognition while the caller talks),
2. wait a fixed end-of-speech timeout (``ENDPOINT_MS`` = 700 ms of silence, typical cloud
   endpointing; no "the phrase sounds complete" shortcut),
3. recognize the recording in one piece,
4. ask the dialog (no speculative answer during the silence),
5. synthesize the WHOLE reply (no prompt cache, no sentence streaming),
6. then play it.

How this works: ``BaselineVoice`` is a ``callctl.voice.Voice`` (same fork server,
store, recognizer model, dialog flows, playback and barge-in machinery, run by the same
``callctl.daemon.Daemon``) whose conversations differ only in the pipeline:
``BatchListener`` (the real ``Listener`` — same VAD, same audio-clock silence — but it only
buffers audio and decodes it in one ``accept`` + ``final`` after the endpoint), a fixed
``EndpointPolicy`` and ``WholeReplySpeaker`` (every sentence synthesized, concatenated, then
handed over as one chunk). The emulator and the callers see exactly the same switch, so
only the pipeline differs between the two measurements.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from callctl.asr.base import Recognition, Recognizer
from callctl.asr.scheduler import Priority
from callctl.call.session import CallSession
from callctl.call.timeline import Turn
from callctl.config import Config
from callctl.conversation import Conversation
from callctl.media.listener import Listener
from callctl.media.vad import SpeechEnded
from callctl.metrics import Metrics
from callctl.tts import build
from callctl.tts.base import AudioChunk
from callctl.tts.speaker import Reply, Speaker
from callctl.turns import EndpointPolicy
from callctl.voice import Voice

ENDPOINT_MS = 700            # fixed end-of-speech timeout of the cloud-style pipeline
SYNTH_DEADLINE_MS = 20000    # the whole reply at once takes long; do not cut it short


def batch_recognize(recognizer: Recognizer, pcm: bytes) -> Recognition:
    """Decode ``pcm`` (a whole utterance) in one piece: one ``accept``, then ``final``.
    Blocking, CPU-bound: run it in the hub's thread pool."""
    if pcm:
        recognizer.accept(pcm)
    return recognizer.final()


class BatchListener(Listener):
    """The ``Listener`` with streaming recognition and speculation taken out: audio of the
    turn is only buffered, and recognized in one piece when the policy commits the turn
    (after the fixed silence). VAD events still go to the conversation (barge-in works)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recording: list[bytes] = []

    def _decode(self, frames: list[Any], priority: Any = None) -> None:
        if not frames:
            return
        import numpy as np

        self._recording.append(np.concatenate([f.samples for f in frames]).astype("<i2")
                               .tobytes())
        self._seg_audio_s += sum(f.duration_s for f in frames)

    def _speech_ended(self, ev: SpeechEnded) -> None:
        from callctl.media.listener import Phase

        self.emit(ev)
        self.phase = Phase.PAUSED
        self._speech_end = ev.at             # no speculative final: wait for the endpoint

    def _final(self) -> Recognition | None:
        pcm, self._recording = b"".join(self._recording), []
        self._seg_audio_s = 0.0
        self._partial = ""
        rec: Recognition | None = self._run(batch_recognize, self.recognizer, pcm,
                                            priority=Priority.URGENT)
        return rec


class WholeReplySpeaker(Speaker):
    """A ``Speaker`` without cache or sentence streaming: every sentence of the reply is
    synthesized first, then the whole reply is handed to playback as one chunk."""

    def _feed_pieces(self, reply: Reply, turn: Turn | None) -> None:
        if not reply.pieces:
            return
        chunks: list[AudioChunk] = []
        for piece in reply.pieces:
            reply.cancel_token.raise_if_cancelled()
            got = self._synthesize(self.primary, piece, reply.cancel_token)
            if not got:
                reply.failed = True
                self.log.error("baseline_tts_failed", text=piece[:60])
                return
            chunks += got
        pcm = b"".join(c.pcm for c in chunks)
        self._hand_over(reply, AudioChunk(pcm, chunks[0].rate, " ".join(reply.pieces)),
                        self.primary.engine, turn)


class BaselineConversation(Conversation):
    """``Conversation`` with the cloud-style listener and no speculation (module doc)."""

    listener_class = BatchListener

    def _speculate(self, text: str) -> None:
        """The cloud pipeline answers only the committed turn."""


def baseline_policy(policy: EndpointPolicy) -> EndpointPolicy:
    """``policy`` with one fixed silence (``ENDPOINT_MS``) whatever the words sound like."""
    return dataclasses.replace(policy, endpoint_silence_ms=ENDPOINT_MS,
                               complete_silence_ms=ENDPOINT_MS,
                               trailing_silence_ms=ENDPOINT_MS)


class BaselineVoice(Voice):
    """``Voice`` for the cloud-style pipeline: same engines, ``WholeReplySpeaker`` with no
    cache, ``BaselineConversation`` per call."""

    def __init__(self, cfg: Config, metrics: Metrics, **kwargs: Any) -> None:
        primary = build(cfg.tts)
        speaker = WholeReplySpeaker(primary, cfg.media.sample_rate, SYNTH_DEADLINE_MS,
                                    cache=None, metrics=metrics)
        super().__init__(cfg, metrics, speaker=speaker, **kwargs)
        self.policy = baseline_policy(self.policy)

    def __call__(self, call: CallSession) -> Conversation:
        if self.asr is None:
            raise RuntimeError("BaselineVoice.start() was not called")
        return BaselineConversation(self, call)


__all__ = ["ENDPOINT_MS", "BaselineConversation", "BaselineVoice", "BatchListener",
           "WholeReplySpeaker", "baseline_policy", "batch_recognize"]
