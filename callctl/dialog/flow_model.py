"""The flow model: nodes, intents and flows as frozen data; prompt templates; grammars.

A ``Flow`` is built and validated by ``callctl.dialog.flow_loader`` and run by
``callctl.dialog.flow_engine``; the file format is described in ``callctl.dialog.flows``.
Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callctl.dialog import normalize
from callctl.dialog.base import (
    Action,
    Hangup,
    Prompt,
    Transfer,
)

KINDS = ("none", "intent", "yes_no", "digits", "text")
NODE_KEYS = frozenset({
    "say", "audio", "input", "reprompt", "no_match", "no_input", "retries", "on_fail", "next",
    "slot", "confirm", "min_digits", "max_digits", "terminator", "yes", "no", "no_input_ms",
    "intents", "actions",
})
FLOW_KEYS = frozenset({"start", "retries", "on_fail", "goodbye", "no_match", "no_input", "intents",
                       "no_input_ms", "name", "description"})
INTENT_KEYS = frozenset({"phrases", "keywords", "regex", "dtmf", "goto", "actions"})
ACTION_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {  # type -> (required, optional)
    "transfer": (frozenset({"dest"}), frozenset()),
    "hangup": (frozenset(), frozenset({"cause"})),
    "set": (frozenset({"name", "value"}), frozenset()),
    "event": (frozenset({"name"}), frozenset({"data"})),
    "webhook": (frozenset({"url"}), frozenset({"payload", "deadline_ms"})),
}
DEFAULT_NO_MATCH = "Sorry, I didn't catch that."
DEFAULT_NO_INPUT = "Sorry, I didn't hear anything."
DEFAULT_GOODBYE = "Sorry, I could not help you this time. Goodbye."
PLACEHOLDER = re.compile(r"\{(\w+)(?::(digits))?\}")
DEST = re.compile(r"(sips?:\S+|queue:[\w.@-]+|[\w*#+.@-]+)")
CAUSE = re.compile(r"[A-Z_]+")
MAX_HOPS = 64


class FlowError(Exception):
    """A flow file (or a route's reference to one) is wrong. ``problems``: one line each,
    ``FILE:LINE: message``; ``str()`` is the first problem and the count of the rest."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more if problems else "flow error")






@dataclass(frozen=True)
class Intent:
    name: str
    phrases: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    dtmf: str = ""
    goto: str | None = None
    actions: tuple[Action, ...] = ()

    def matches(self, text: str) -> bool:
        """True if normalized ``text`` holds a phrase, a keyword or matches the regex."""
        words = text.split()
        for phrase in (*self.phrases, *self.keywords):
            p = phrase.split()
            if p and any(words[i:i + len(p)] == p for i in range(len(words) - len(p) + 1)):
                return True
        return bool(self.pattern and self.pattern.search(text))


@dataclass(frozen=True)
class Node:
    id: str
    input: str = "none"
    say: tuple[Prompt, ...] = ()
    reprompt: tuple[Prompt, ...] = ()
    no_match: tuple[Prompt, ...] = ()
    no_input: tuple[Prompt, ...] = ()
    retries: int = 2
    on_fail: str | None = None
    next: str | None = None
    slot: str | None = None
    confirm: str | None = None
    min_digits: int = 1
    max_digits: int = 20
    terminator: str = "#"
    yes: str | None = None
    no: str | None = None
    no_input_ms: int | None = None
    intents: tuple[Intent, ...] = ()
    actions: tuple[Action, ...] = ()

    @property
    def terminal(self) -> bool:
        """Entering this node ends the dialog (it transfers or hangs up)."""
        return any(isinstance(a, Transfer | Hangup) for a in self.actions)

    def targets(self) -> list[str]:
        """Every node this node can lead to."""
        out = [self.next, self.yes, self.no, self.on_fail, *(i.goto for i in self.intents)]
        return [t for t in out if t]


@dataclass(frozen=True)
class Flow:
    name: str
    path: Path
    start: str
    nodes: Mapping[str, Node]
    on_fail: str | None = None
    goodbye: str = DEFAULT_GOODBYE
    no_match: str = DEFAULT_NO_MATCH
    no_input: str = DEFAULT_NO_INPUT
    no_input_ms: int | None = None
    slots: frozenset[str] = field(default_factory=frozenset)
    intents: tuple[Intent, ...] = ()       # [flow.intents.*]: heard at every node




def static_prompts(flow: Flow) -> list[str]:
    """Every fixed sentence the flow can speak (for TTS pre-rendering), without duplicates.
    Prompts with placeholders or a prerecorded audio file are left out."""
    seen: dict[str, None] = {}
    defaults = [flow.no_match, flow.no_input, flow.goodbye]
    for node in flow.nodes.values():
        for p in (*node.say, *node.reprompt, *node.no_match, *node.no_input):
            if p.static and p.audio is None:
                seen[p.text] = None
    for d in defaults:
        if not PLACEHOLDER.search(d):
            seen[d] = None
    return list(seen)


def grammar(node: Node, flow_intents: tuple[Intent, ...] = ()) -> list[str] | None:
    """Phrases a recognizer may be restricted to at ``node`` (plus the phrases of the flow's
    global ``flow_intents``); None: open vocabulary (free text, or an intent only a regex can
    describe)."""
    extra = [w for i in flow_intents for w in (*i.phrases, *i.keywords)]
    if node.input == "intent":
        intents = (*node.intents, *flow_intents)
        if any(i.pattern is not None and not (i.phrases or i.keywords) for i in intents):
            return None
        words = dict.fromkeys(w for i in intents for w in (*i.phrases, *i.keywords))
        return list(words) or None
    if node.input == "yes_no":
        return list(dict.fromkeys([*normalize.YES_NO_WORDS, *extra]))
    if node.input == "digits":
        return list(dict.fromkeys([*normalize.NUMBER_WORDS, *extra]))
    return None


def match(intents: tuple[Intent, ...], text: str | None = None, dtmf: str | None = None
          ) -> Intent | None:
    """The first of ``intents`` matching normalized ``text`` or the first key of ``dtmf``."""
    if dtmf:
        return next((i for i in intents if i.dtmf and i.dtmf == dtmf[:1]), None)
    if text:
        return next((i for i in intents if i.matches(text)), None)
    return None






def fill(template: str, values: Mapping[str, str]) -> str:
    """``{name}`` / ``{name:digits}`` replaced from ``values`` (unknown names left as is)."""
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            return m.group(0)
        v = str(values[m.group(1)])
        return " ".join(v) if m.group(2) == "digits" else v
    return PLACEHOLDER.sub(one, template)


def fill_any(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return fill(value, values)
    if isinstance(value, Mapping):
        return {k: fill_any(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_any(v, values) for v in value]
    return value


__all__ = [
    "ACTION_FIELDS",
    "CAUSE",
    "DEFAULT_GOODBYE",
    "DEFAULT_NO_INPUT",
    "DEFAULT_NO_MATCH",
    "DEST",
    "FLOW_KEYS",
    "INTENT_KEYS",
    "KINDS",
    "MAX_HOPS",
    "NODE_KEYS",
    "PLACEHOLDER",
    "Flow",
    "FlowError",
    "Intent",
    "Node",
    "fill",
    "fill_any",
    "grammar",
    "match",
    "static_prompts",
]
