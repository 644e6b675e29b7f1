"""Streamed dialog replies: ``Pump`` reads one ``Proposal.parts()`` on a helper greenlet and
posts each part to the call's inbox as it completes.

How this works: the LLM streams. Its ``Proposal.parts()`` runs in a ``Pump`` greenlet that
posts a ``PartReady`` per part (sentence, filler, action) to the call's inbox, and one
``PartsDone`` at the end, so TTS starts on the first sentence while the model is still
writing the rest. The call's greenlet (``callctl.conversation``) speaks the parts of its live
pump; a *speculative* pump (``live`` False, started on the speculative final transcript)
runs the same way, and the conversation holds its parts back (``held``) until the turn
commits with the same ``text`` (or stops the pump when it does not). ``stop()`` is
idempotent and releases the proposal's connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import gevent

from callctl.call.timeline import Turn
from callctl.dialog.base import Proposal, ReplyPart


@dataclass(frozen=True, eq=False)
class PartReady:
    """A ``Pump`` got the next part of a streamed dialog reply."""

    pump: Pump
    part: ReplyPart


@dataclass(frozen=True, eq=False)
class PartsDone:
    """A ``Pump``'s proposal has no more parts (``error``: it raised, which it should not)."""

    must_deliver: ClassVar[bool] = True    # never dropped by a full call inbox
    pump: Pump
    error: str = ""



class Pump:
    """Iterates one streamed ``Proposal.parts()`` on a helper greenlet, posting ``PartReady``
    per part and one ``PartsDone`` at the end. A *speculative* pump (``live`` False) runs the
    same way; the conversation holds its parts back until the turn commits with ``text``."""

    def __init__(self, proposal: Proposal, post: Callable[[object], object], log: Any,
                 turn: Turn | None, text: str | None = None, live: bool = True) -> None:
        self.proposal = proposal
        self.post = post
        self.log = log
        self.turn = turn
        self.text = text
        self.live = live
        self.held: list[ReplyPart] = []
        self.finished = False          # PartsDone was handled
        self.committed = False
        self.spoke = False             # a non-filler sentence was said
        self.greenlet: gevent.Greenlet[Any, Any] = gevent.spawn(self._run)

    def _run(self) -> None:
        error = ""
        try:
            for part in self.proposal.parts():
                if not self.post(PartReady(self, part)):
                    self.log.warning("conversation.part_dropped", part=type(part).__name__)
        except Exception as e:  # the LLM proposal falls back itself; this is a bug guard
            error = repr(e)[:200]
            self.log.exception("conversation.parts_failed")
        self.post(PartsDone(self, error))

    def stop(self) -> None:
        """Stop reading the stream (idempotent); the proposal releases its connection."""
        if not self.greenlet.dead and self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=True, timeout=1.0)
        self.proposal.cancel()

