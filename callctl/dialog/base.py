"""The dialog engine interface shared by scripted flows and the LLM.

How this works: the CallSession feeds one *turn input* per caller turn (``Speech`` final or
speculative, ``Dtmf`` keys, ``NoInput``, ``NoMatch``) to ``DialogEngine.propose()``. That
returns a ``Proposal``: the reply to that input, computed WITHOUT changing the engine's state.
``Proposal.parts()`` yields the reply in speaking order: ``Prompt`` sentences and action
objects (``Transfer``, ``Hangup``, ``SetVar``, ``EmitEvent``, ``Webhook``, ``CollectDigits``).
Actions are returned, never executed here: the session executes them once it commits.
``Proposal.commit()`` makes the proposal's state the engine's state; a proposal made before
another one was committed is stale and its ``commit()`` raises ``StaleProposal``, so a
speculative reply computed on a partial transcript can simply be dropped (``cancel()``) when
the final transcript differs. ``DialogEngine.respond(turn)`` is propose + reply + commit.
Replies compare by value: the session may synthesize a speculative reply's sentences early
and keep them when ``final.reply() == speculative.reply()`` (flows' ``reply()`` may be called
any number of times; an LLM proposal streams once).

After each committed reply ``engine.listen`` says what the next turn expects (recognizer
grammar, DTMF collection, no-input timeout); ``listen is None`` means the dialog is over and
the reply's last action is a ``Transfer`` or ``Hangup``.

``state()`` is a JSON-serializable dict (stored in Redis with the call); ``restore(dict)``
continues a call after a daemon restart.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------
# Call context and turn inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallContext:
    """Facts about the call a dialog may use (and substitute into prompts as ``{caller}``)."""

    call_uuid: str
    caller: str = ""
    did: str = ""
    route: str = ""
    language: str = "en"
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Speech:
    """What the recognizer heard. ``final`` False marks a speculative (partial) transcript."""

    text: str
    final: bool = True


@dataclass(frozen=True)
class Dtmf:
    """One or more DTMF keys pressed by the caller, in order (``0-9``, ``*``, ``#``, ``A-D``)."""

    digits: str


@dataclass(frozen=True)
class NoInput:
    """The caller said and pressed nothing within the no-input timeout."""


@dataclass(frozen=True)
class NoMatch:
    """The caller spoke but the recognizer produced nothing usable."""

    reason: str = ""


TurnInput = Speech | Dtmf | NoInput | NoMatch

# --------------------------------------------------------------------------------------------
# Reply parts: prompts and actions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """One sentence to speak. ``audio`` is a prerecorded file to play instead of synthesizing
    ``text`` (``text`` stays as its transcript). ``static`` marks text fixed in the flow (safe to
    pre-render and cache); ``filler`` marks a stall filler ("One moment.") from the LLM."""

    text: str
    audio: str | None = None
    static: bool = True
    filler: bool = False


@dataclass(frozen=True)
class Transfer:
    """Transfer the call. ``dest``: a dialplan extension (``"2001"``), a SIP URI
    (``"sip:agent@10.0.0.5"``) or a queue (``"queue:billing"``). Ends the dialog."""

    dest: str

    @property
    def kind(self) -> str:
        """``"uri"``, ``"queue"`` or ``"extension"``."""
        if self.dest.startswith(("sip:", "sips:")):
            return "uri"
        if self.dest.startswith("queue:"):
            return "queue"
        return "extension"

    @property
    def target(self) -> str:
        """``dest`` without the ``queue:`` prefix."""
        return self.dest.removeprefix("queue:")


@dataclass(frozen=True)
class Hangup:
    """Hang up with a FreeSWITCH hangup cause. Ends the dialog."""

    cause: str = "NORMAL_CLEARING"


@dataclass(frozen=True)
class SetVar:
    """Set a channel variable (``uuid_setvar``). Flows never put control characters (CR, LF)
    in ``value``; the session still must quote it for ESL."""

    name: str
    value: str


@dataclass(frozen=True)
class EmitEvent:
    """Append an event to the store's event stream (``callctl:events``)."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Webhook:
    """POST ``payload`` as JSON to ``url``; the session gives up after ``deadline_ms``.
    Fire-and-forget: the dialog never waits for the answer."""

    url: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    deadline_ms: int = 1000


@dataclass(frozen=True)
class CollectDigits:
    """Collect DTMF: the session forwards keys as ``Dtmf`` turns until ``max_digits`` keys,
    ``terminator`` or ``timeout_ms`` without a key (then ``NoInput``)."""

    min_digits: int = 1
    max_digits: int = 20
    terminator: str = "#"
    timeout_ms: int = 5000


Action = Transfer | Hangup | SetVar | EmitEvent | Webhook | CollectDigits
ReplyPart = Prompt | Action
ACTION_TYPES: dict[str, type] = {
    "transfer": Transfer, "hangup": Hangup, "set": SetVar, "event": EmitEvent,
    "webhook": Webhook, "collect_digits": CollectDigits,
}
_TYPE_NAMES = {cls: name for name, cls in ACTION_TYPES.items()}


def part_to_dict(part: ReplyPart) -> dict[str, Any]:
    """A reply part as plain JSON-able data with a ``type`` key (for events and logs)."""
    data = {k: (dict(v) if isinstance(v, Mapping) else v)
            for k, v in dataclasses.asdict(part).items()}
    data["type"] = "prompt" if isinstance(part, Prompt) else _TYPE_NAMES[type(part)]
    return data


def part_from_dict(data: Mapping[str, Any]) -> ReplyPart:
    """Inverse of ``part_to_dict``. Raises DialogError for an unknown type or fields."""
    values = {k: v for k, v in data.items() if k != "type"}
    kind = data.get("type")
    cls: type = Prompt if kind == "prompt" else ACTION_TYPES.get(str(kind), type(None))
    if cls is type(None):
        raise DialogError(f"unknown reply part type {kind!r}")
    try:
        part: ReplyPart = cls(**values)
    except TypeError as e:
        raise DialogError(f"bad {kind} fields: {e}") from None
    return part


@dataclass(frozen=True)
class Listen:
    """What the next caller turn is expected to be.

    ``grammar``: phrases to restrict the recognizer to (None: open vocabulary).
    ``dtmf``: DTMF keys are meaningful (forward them as ``Dtmf`` turns).
    ``max_digits``/``terminator``: a digit collection is in progress (session may end the
    key sequence itself). ``no_input_ms``: override of ``turns.no_input_ms`` (None: default).
    """

    grammar: tuple[str, ...] | None = None
    dtmf: bool = True
    max_digits: int | None = None
    terminator: str = "#"
    no_input_ms: int | None = None


@dataclass(frozen=True)
class Reply:
    """A complete reply: sentences then actions, and what to listen for next."""

    prompts: tuple[Prompt, ...] = ()
    actions: tuple[Action, ...] = ()
    listen: Listen | None = Listen()

    @property
    def done(self) -> bool:
        """True when the dialog ends with this reply (transfer or hangup follows)."""
        return self.listen is None

    @property
    def sentences(self) -> list[str]:
        return [p.text for p in self.prompts]

    def parts(self) -> list[ReplyPart]:
        return [*self.prompts, *self.actions]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DialogError(Exception):
    """Misuse of a dialog engine (bad state dict, unknown node); not the caller's fault."""


class StaleProposal(DialogError):
    """``commit()`` of a proposal computed from a state that has changed since."""


# --------------------------------------------------------------------------------------------
# Engine interface
# --------------------------------------------------------------------------------------------


class Proposal(ABC):
    """A reply to one turn input, not yet applied to the engine's state."""

    @abstractmethod
    def parts(self) -> Iterator[ReplyPart]:
        """The reply in speaking order: ``Prompt`` items, then or between them actions.
        Flows yield instantly; the LLM yields sentences as they stream (may block the calling
        greenlet cooperatively, always bounded by its deadlines). Iterate at most once."""

    @abstractmethod
    def commit(self) -> None:
        """Apply this proposal to the engine (raises ``StaleProposal`` if outdated)."""

    def cancel(self) -> None:  # noqa: B027 - optional hook; flows hold nothing
        """Drop the proposal and release what it holds (open streams). Idempotent."""

    @property
    @abstractmethod
    def listen(self) -> Listen | None:
        """What the next turn expects once this proposal is committed (valid after
        ``parts()`` is exhausted; None: the dialog ends)."""

    def reply(self) -> Reply:
        """Drain ``parts()`` into a ``Reply``."""
        prompts: list[Prompt] = []
        actions: list[Action] = []
        for part in self.parts():
            if isinstance(part, Prompt):
                prompts.append(part)
            else:
                actions.append(part)
        return Reply(tuple(prompts), tuple(actions), self.listen)


class DialogEngine(ABC):
    """One call's dialog. Owned by the call's greenlet; not thread-safe."""

    @abstractmethod
    def start(self) -> Proposal:
        """The opening (greeting) of the call."""

    @abstractmethod
    def propose(self, turn: TurnInput) -> Proposal:
        """The reply to ``turn`` without changing state. Cheap and side-effect free."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-serializable state of the dialog (for the store)."""

    @abstractmethod
    def restore(self, data: Mapping[str, Any]) -> None:
        """Continue from ``state()`` output; raises DialogError if it does not fit."""

    @property
    @abstractmethod
    def listen(self) -> Listen | None:
        """What the next turn is expected to be (None: dialog over)."""

    def respond(self, turn: TurnInput) -> Reply:
        """Propose, drain and commit in one step (the non-speculative path)."""
        proposal = self.propose(turn)
        reply = proposal.reply()
        proposal.commit()
        return reply

    def open(self) -> Reply:
        """``start()`` drained and committed."""
        proposal = self.start()
        reply = proposal.reply()
        proposal.commit()
        return reply


__all__ = [
    "ACTION_TYPES", "Action", "CallContext", "CollectDigits", "DialogEngine", "DialogError",
    "Dtmf", "EmitEvent", "Hangup", "Listen", "NoInput", "NoMatch", "Prompt", "Proposal",
    "Reply", "ReplyPart", "SetVar", "Speech", "StaleProposal", "Transfer", "TurnInput",
    "Webhook", "part_from_dict", "part_to_dict",
]
