"""One turn's reply, from text to audio in a ``PlaybackHandle``, with no dead air.

How this works: ``Speaker.say(text, handle, turn)`` cleans the text and starts one greenlet
(the *feeder*) that works through the reply piece by piece (``split_sentences``): a reply
found whole in the prompt cache is played from it; otherwise each piece is synthesized by
the main engine under ``deadline_s`` and handed to the playback handle at once, so piece
*n + 1* is synthesized while piece *n* plays. When the main engine fails or misses the
deadline, that piece and the rest of the reply use the fallback engine; when that fails
too, the cached "one moment" prompt is played and the reply ends (``Reply.failed``). The
call never hears dead air because of TTS.

Interrupt or hangup: the handle's stop callback cancels the reply: the cancel token stops
threadpool synthesis before its next sentence, the feeder greenlet is killed, and the handle
deletes its files. ``Reply.cancel()`` does the same from the CallSession side.

Metrics: ``callctl_tts_real_time_factor_ratio{engine}`` per synthesized piece,
``callctl_engine_failures_total{engine}`` per failure or missed deadline, the
``tts_first_chunk`` mark (and hop) on the turn's timeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gevent

from callctl.call.timeline import Turn
from callctl.log import get_logger
from callctl.metrics import Metrics
from callctl.playback import PlaybackError, PlaybackHandle
from callctl.tts.base import (
    AudioChunk,
    Cancelled,
    CancelToken,
    Synthesizer,
    TtsError,
    check_rate,
    clean_text,
    split_sentences,
)
from callctl.tts.cache import PromptCache

ONE_MOMENT = "One moment, please."

#: Where the feeder hands its results when the call's own greenlet must do the playing:
#: e.g. ``CallSession.inbox.put_control``. The session passes each item to the
#: conversation, which calls ``Reply.deliver(item)``.
Post = Callable[[object], object]


@dataclass(frozen=True)
class ChunkReady:
    """A piece of the reply is synthesized and should be queued for playback."""

    reply: Reply
    chunk: AudioChunk


@dataclass(frozen=True)
class ReplySynthesized:
    """The last piece of the reply was handed over (``playback.finish()`` is due)."""

    must_deliver: ClassVar[bool] = True    # never dropped by a full call inbox
    reply: Reply


@dataclass
class Reply:
    """A reply in progress. ``wait()`` returns when every piece was handed to playback (or
    the reply was cancelled or failed); ``playback.wait()`` says when it was heard."""

    text: str
    pieces: list[str]
    playback: PlaybackHandle
    post: Post | None = None
    cancel_token: CancelToken = field(default_factory=CancelToken)
    sources: list[str] = field(default_factory=list)   # per piece: cache | <engine> | one_moment
    failed: bool = False
    greenlet: gevent.Greenlet[Any, Any] | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def cancel(self) -> None:
        """Stop synthesis now (idempotent; safe from the feeder itself)."""
        self.cancel_token.cancel()
        g = self.greenlet
        if g is not None and not g.dead and g is not gevent.getcurrent():
            g.kill(block=True, timeout=2.0)

    def deliver(self, item: object) -> None:
        """Apply a ``ChunkReady``/``ReplySynthesized`` posted by the feeder, in the greenlet
        that owns the call. Items of a cancelled reply are dropped. ``PlaybackError`` from
        the handle propagates to the caller."""
        if self.cancelled or not isinstance(item, ChunkReady | ReplySynthesized) \
                or item.reply is not self:
            return
        if isinstance(item, ChunkReady):
            self.playback.add(item.chunk)
        else:
            self.playback.finish()

    def remaining_text(self) -> str:
        """What to say again after a false interruption: the cut piece and everything after
        it (the whole reply when it came from the cache in one piece)."""
        cut = self.playback.cut_index
        if cut is None:
            return ""
        if self.sources[:1] in (["cache"], ["one_moment"]):
            return self.text
        return " ".join(self.pieces[cut:])

    def wait(self, timeout: float | None) -> bool:
        g = self.greenlet
        if g is None:
            return True
        g.join(timeout)
        return bool(g.dead)


@dataclass(eq=False)
class Prerender:
    """One sentence synthesized ahead of time for one call (a speculative reply), kept in
    memory only: nothing is written to the prompt cache (it may hold caller data). ``chunks``
    is set once every piece was synthesized by the main engine; None while running, when the
    prompt cache already has the text, or on failure. Hand it to ``Speaker.say(ready=...)``
    when the reply is committed; ``cancel()`` it when the speculation is dropped."""

    text: str                                # cleaned, as ``Reply.text``
    cancel_token: CancelToken = field(default_factory=CancelToken)
    chunks: list[AudioChunk] | None = None
    greenlet: gevent.Greenlet[Any, Any] | None = None

    def cancel(self) -> None:
        """Stop synthesis now (idempotent)."""
        self.cancel_token.cancel()
        g = self.greenlet
        if g is not None and not g.dead and g is not gevent.getcurrent():
            g.kill(block=True, timeout=2.0)

    def wait(self, timeout: float) -> bool:
        """Wait for the synthesis to end; True when it did."""
        g = self.greenlet
        if g is not None:
            g.join(timeout)
        return g is None or bool(g.dead)


class Speaker:
    """Turns reply text into audio in a playback handle. One per call (or shared: it holds
    no per-call state)."""

    def __init__(self, primary: Synthesizer, rate: int, deadline_ms: int,
                 fallback: Synthesizer | None = None, cache: PromptCache | None = None,
                 metrics: Metrics | None = None, one_moment_text: str = ONE_MOMENT,
                 fallback_deadline_ms: int | None = None) -> None:
        self.primary = primary
        self.fallback = fallback
        self.rate = check_rate(rate)
        self.deadline_s = deadline_ms / 1000
        self.fallback_deadline_s = (fallback_deadline_ms or deadline_ms) / 1000
        self._moment: AudioChunk | None = None
        self.cache = cache
        self.metrics = metrics
        self.one_moment_text = one_moment_text
        self.log = get_logger()

    def prepare(self, prompts: tuple[str, ...] | list[str] = ()) -> dict[str, int]:
        """Pre-render the "one moment" prompt and ``prompts`` (greeting, static replies)
        into the cache with the main engine (the fallback's voice when that fails). Call at
        start-up or while a call rings."""
        if self.cache is None:
            return {"cached": 0, "rendered": 0, "failed": 0}
        texts = [self.one_moment_text, *prompts]
        counts = self.cache.render(self.primary, texts, (self.rate,))
        if counts["failed"] and self.fallback is not None:
            self.cache.render(self.fallback, [self.one_moment_text], (self.rate,))
        self._moment = self._one_moment()
        if self._moment is None:
            self.log.error("tts_one_moment_prompt_missing", text=self.one_moment_text)
        return counts

    def prerender(self, text: str) -> Prerender:
        """Start synthesizing ``text`` into memory (a speculative reply's sentence); returns
        at once. Skipped (``chunks`` None) when the prompt cache already has the text."""
        ahead = Prerender(clean_text(text))
        cached = self.cache is not None and bool(ahead.text) and \
            self.cache.path_for(self.primary, ahead.text, self.rate).is_file()
        if ahead.text and not cached:
            ahead.greenlet = gevent.spawn(self._prerender, ahead)
        return ahead

    def _prerender(self, ahead: Prerender) -> None:
        chunks: list[AudioChunk] = []
        try:
            for piece in split_sentences(ahead.text):
                got = self._synthesize(self.primary, piece, ahead.cancel_token)
                if not got:
                    return                     # say() synthesizes it (with the fallback)
                chunks += got
        except Cancelled:
            return
        ahead.chunks = chunks

    def say(self, text: str, playback: PlaybackHandle, turn: Turn | None = None,
            post: Post | None = None, ready: Prerender | None = None) -> Reply:
        """Start speaking ``text`` into ``playback``; returns at once. The handle is
        ``finish()``-ed when the last piece is queued. Empty or unspeakable text plays
        nothing and finishes the handle. ``ready``: a ``prerender`` of the same text, whose
        audio is used (waited for, up to the deadline, if still running) instead of
        synthesizing it again; another text's is ignored.

        Without ``post`` the feeder greenlet calls ``playback.add``/``finish`` itself (stream
        mode, tests). With ``post`` (file mode in a CallSession, whose ESL socket only its
        own greenlet may use) the feeder posts ``ChunkReady``/``ReplySynthesized`` and the
        owner calls ``reply.deliver(item)``."""
        cleaned = clean_text(text)
        reply = Reply(text=cleaned, pieces=split_sentences(cleaned), playback=playback,
                      post=post)
        playback.add_stop_callback(reply.cancel)
        ahead = ready if ready is not None and ready.text == cleaned else None
        reply.greenlet = gevent.spawn(self._feed, reply, turn, ahead)
        return reply

    # -- the feeder -------------------------------------------------------------------------

    def _feed(self, reply: Reply, turn: Turn | None, ahead: Prerender | None = None) -> None:
        try:
            if ahead is not None and ahead.wait(self.deadline_s) and ahead.chunks:
                for chunk in ahead.chunks:
                    self._hand_over(reply, chunk, self.primary.engine, turn)
            else:
                if ahead is not None:
                    ahead.cancel()
                self._feed_pieces(reply, turn)
        except Cancelled:
            pass
        except PlaybackError as exc:
            reply.failed = True
            self.log.warning("tts_playback_failed", error=str(exc))
        except Exception:
            # A bug or an unexpected OS error ends this reply, not the call: the handle is
            # still finished below, so the call moves on instead of waiting in silence.
            reply.failed = True
            self.log.exception("tts_reply_failed")
        finally:
            if not reply.cancelled:
                if reply.post is not None:
                    reply.post(ReplySynthesized(reply))
                else:
                    reply.playback.finish()

    def _feed_pieces(self, reply: Reply, turn: Turn | None) -> None:
        if not reply.pieces:
            return
        if self.cache is not None:
            hit = self.cache.get(self.primary, reply.text, self.rate)
            if hit is not None:
                self._hand_over(reply, hit, "cache", turn)
                return
        engine: Synthesizer | None = self.primary
        for piece in reply.pieces:
            reply.cancel_token.raise_if_cancelled()
            chunks: list[AudioChunk] = []
            while engine is not None and not chunks:
                chunks = self._synthesize(engine, piece, reply.cancel_token)
                if not chunks:
                    engine = self.fallback if engine is self.primary else None
            if not chunks:
                reply.failed = True
                moment = self._one_moment()
                if moment is not None:
                    self._hand_over(reply, moment, "one_moment", turn)
                else:
                    self.log.error("tts_no_audio_at_all", text=piece[:60])
                return
            assert engine is not None
            for chunk in chunks:
                self._hand_over(reply, chunk, engine.engine, turn)

    def _synthesize(self, engine: Synthesizer, text: str, cancel: CancelToken) -> list[AudioChunk]:
        """All chunks of ``text`` from ``engine`` within its deadline, or [] on failure."""
        t0 = time.monotonic()
        chunks: list[AudioChunk] = []
        limit = self.deadline_s if engine is self.primary else self.fallback_deadline_s
        try:
            with gevent.Timeout(limit, TtsError(
                    f"{engine.engine} missed the {limit * 1000:.0f} ms deadline")):
                for chunk in engine.synthesize(text, self.rate, cancel):
                    chunks.append(chunk)
        except TtsError as exc:
            cancel.raise_if_cancelled()
            self._failure(engine, exc)
            return []
        cancel.raise_if_cancelled()
        audio_s = sum(c.duration_s for c in chunks)
        if audio_s <= 0:
            self._failure(engine, TtsError("no audio"))
            return []
        if self.metrics is not None:
            self.metrics.tts_rtf.labels(engine=engine.engine).observe(
                (time.monotonic() - t0) / audio_s)
        return chunks

    def _failure(self, engine: Synthesizer, exc: Exception) -> None:
        self.log.warning("tts_engine_failed", engine=engine.engine, error=str(exc))
        if self.metrics is not None:
            self.metrics.engine_failures.labels(engine=engine.engine).inc()

    def _one_moment(self) -> AudioChunk | None:
        if self._moment is not None:
            return self._moment
        if self.cache is None:
            return None
        for engine in (self.primary, self.fallback):
            if engine is not None:
                hit = self.cache.get(engine, self.one_moment_text, self.rate)
                if hit is not None:
                    return hit
        return None

    def _hand_over(self, reply: Reply, chunk: AudioChunk, source: str,
                   turn: Turn | None) -> None:
        reply.cancel_token.raise_if_cancelled()
        if turn is not None and "tts_first_chunk" not in turn.marks:
            at = turn.mark("tts_first_chunk")
            decided = turn.marks.get("dialog")
            if self.metrics is not None and decided is not None:
                self.metrics.observe_hop("tts_first_chunk", at - decided)
        reply.sources.append(source)
        if reply.post is not None:
            reply.post(ChunkReady(reply, chunk))
        else:
            reply.playback.add(chunk)
