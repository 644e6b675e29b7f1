"""The states of one call and every legal move between them, as ONE table. No I/O.

How this works: ``TRANSITIONS`` maps ``(state, trigger)`` to the next state. Anything not in
the table is illegal and raises ``IllegalTransition`` (our own misuse: the caller of
``CallStateMachine.fire`` asked for a move the table does not allow; the session ends the call
with a clear log line, never the daemon). ``Trigger.HANGUP`` is legal from every state so a
hangup can never be lost, and a second hangup in ``ENDED`` is a harmless no-op.

    ringing ─answer→ answered ─listen→ listening ⇄ thinking ⇄ speaking
                        │                 │ (speak/listen/think in any order among those three)
                        └─speak→ speaking  └─transfer→ transferring ─hangup→ ended
    every state ─hangup→ ended
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class CallState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    TRANSFERRING = "transferring"
    ENDED = "ended"


class Trigger(enum.Enum):
    ANSWER = "answer"          # CHANNEL_ANSWER seen
    LISTEN = "listen"          # waiting for the caller (greeting done, reply played out)
    THINK = "think"            # caller turn ended; dialog is deciding
    SPEAK = "speak"            # playback started
    TRANSFER = "transfer"      # blind transfer / bridge requested
    TRANSFER_FAILED = "transfer_failed"  # the transfer was refused; back to listening
    HANGUP = "hangup"          # either side hung up, or the socket went away


S, T = CallState, Trigger
_CONVERSING = (S.LISTENING, S.THINKING, S.SPEAKING)

_TABLE: dict[tuple[CallState, Trigger], CallState] = {
    (S.RINGING, T.ANSWER): S.ANSWERED,
    (S.ANSWERED, T.LISTEN): S.LISTENING,
    (S.ANSWERED, T.SPEAK): S.SPEAKING,
    (S.ANSWERED, T.TRANSFER): S.TRANSFERRING,
    (S.TRANSFERRING, T.TRANSFER_FAILED): S.LISTENING,
}
for _s in _CONVERSING:
    for _t, _to in ((T.LISTEN, S.LISTENING), (T.THINK, S.THINKING), (T.SPEAK, S.SPEAKING),
                    (T.TRANSFER, S.TRANSFERRING)):
        if _s is not _to:
            _TABLE[(_s, _t)] = _to
for _s in CallState:
    _TABLE[(_s, T.HANGUP)] = S.ENDED

#: The whole table, read-only. ``(state, trigger) -> next state``.
TRANSITIONS: Mapping[tuple[CallState, Trigger], CallState] = MappingProxyType(_TABLE)


class IllegalTransition(Exception):
    """Our misuse: a trigger the table does not allow in the current state.

    Remedy: end the call (``hangup_cause``), log this message; never retry the trigger.
    """

    hangup_cause = "NORMAL_TEMPORARY_FAILURE"

    def __init__(self, state: CallState, trigger: Trigger) -> None:
        allowed = sorted(t.value for (s, t) in TRANSITIONS if s is state)
        super().__init__(
            f"illegal call transition: {trigger.value!r} in state {state.value!r} "
            f"(allowed: {', '.join(allowed)})"
        )
        self.state = state
        self.trigger = trigger


class CallStateMachine:
    """Current state of one call. Owned by the call's session greenlet; not thread-safe."""

    def __init__(self, state: CallState = CallState.RINGING) -> None:
        self.state = state
        self.history: list[CallState] = [state]

    def can(self, trigger: Trigger) -> bool:
        """True if ``trigger`` is legal now."""
        return (self.state, trigger) in TRANSITIONS

    def fire(self, trigger: Trigger) -> CallState:
        """Apply ``trigger``; returns the new state. Raises ``IllegalTransition``."""
        try:
            nxt = TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise IllegalTransition(self.state, trigger) from None
        if nxt is not self.state:
            self.history.append(nxt)
        self.state = nxt
        return nxt

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED
