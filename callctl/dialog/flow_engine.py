"""Running a flow for one call: ``FlowEngine`` (a ``DialogEngine``).

How this works: the engine's state is a small JSON-able dict (node, phase ask/confirm,
attempts, slots, DTMF buffer, pending value, done). ``propose(turn)`` deep-copies it into a
``_Step`` that applies the turn (match, collect, confirm, retry, move to a node, render
prompts and actions with the slots) and never touches the engine; ``commit()`` swaps the
step's state in if no other proposal was committed since. A step is a pure function of
(flow, state, input), well under a millisecond, so it can run on every partial transcript.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

from callctl.dialog import normalize
from callctl.dialog.base import (
    Action,
    CallContext,
    DialogEngine,
    DialogError,
    Dtmf,
    EmitEvent,
    Hangup,
    Listen,
    NoInput,
    NoMatch,
    Prompt,
    Proposal,
    ReplyPart,
    SetVar,
    Speech,
    StaleProposal,
    Transfer,
    TurnInput,
    Webhook,
)
from callctl.dialog.flow_model import (
    MAX_HOPS,
    Flow,
    Intent,
    Node,
    fill,
    fill_any,
    grammar,
    match,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Step:
    """One pure step: a copy of the state plus the reply parts produced so far."""

    def __init__(self, flow: Flow, ctx: CallContext, state: Mapping[str, Any]) -> None:
        self.flow, self.ctx = flow, ctx
        self.st: dict[str, Any] = copy.deepcopy(dict(state))
        self.parts: list[ReplyPart] = []

    def values(self) -> dict[str, str]:
        return {**self.ctx.variables, "caller": self.ctx.caller, "did": self.ctx.did,
                **self.st["slots"]}

    def say(self, prompts: tuple[Prompt, ...]) -> None:
        vals = self.values()
        for p in prompts:
            self.parts.append(p if p.static else Prompt(fill(p.text, vals), p.audio, False))

    def act(self, actions: tuple[Action, ...]) -> bool:
        """Append rendered actions; True if one of them ends the dialog."""
        vals = self.values()
        ended = False
        for a in actions:
            if isinstance(a, Transfer):
                a = Transfer(fill(a.dest, vals))
            elif isinstance(a, SetVar):       # one line: values may come from caller speech
                a = SetVar(a.name, _CONTROL.sub(" ", fill(a.value, vals)))
            elif isinstance(a, EmitEvent):
                a = EmitEvent(a.name, fill_any(a.data, vals))
            elif isinstance(a, Webhook):
                a = Webhook(fill(a.url, vals), fill_any(a.payload, vals), a.deadline_ms)
            self.parts.append(a)
            ended = ended or isinstance(a, Transfer | Hangup)
        if ended:
            self.st.update(done=True, node=None)
        return ended

    def end(self, cause: str = "NORMAL_CLEARING") -> None:
        self.parts.append(Hangup(cause))
        self.st.update(done=True, node=None)

    def enter(self, node_id: str) -> None:
        for _ in range(MAX_HOPS):
            node = self.flow.nodes[node_id]
            self.st.update(node=node_id, phase="ask", attempts=0, dtmf="", pending=None)
            self.say(node.say)
            if self.act(node.actions):
                return
            if node.input != "none":
                return
            if node.next is None:
                self.end()
                return
            node_id = node.next
        raise DialogError(f"flow {self.flow.name}: more than {MAX_HOPS} nodes without input")

    def fail_node(self) -> None:
        node = self.flow.nodes[self.st["node"]]
        target = node.on_fail or self.flow.on_fail
        if target and target != node.id:
            self.enter(target)
        else:
            self.say((Prompt(self.flow.goodbye),))
            self.end()

    def miss(self, kind: str) -> None:
        node = self.flow.nodes[self.st["node"]]
        self.st["attempts"] += 1
        self.st["dtmf"] = ""
        if self.st["attempts"] > node.retries:
            self.fail_node()
            return
        if kind == "no_input":
            self.say(node.no_input or (Prompt(self.flow.no_input),))
        else:
            self.say(node.no_match or (Prompt(self.flow.no_match),))
        if self.st["phase"] == "confirm" and node.confirm and node.slot:
            vals = {**self.values(), node.slot: self.st["pending"]}
            self.parts.append(Prompt(fill(node.confirm, vals), static=False))
        else:
            self.say(node.reprompt or node.say)

    def accept(self, node: Node, value: str) -> None:
        assert node.slot is not None
        if node.confirm and self.st["phase"] == "ask":
            self.st.update(phase="confirm", pending=value, attempts=0, dtmf="")
            vals = {**self.values(), node.slot: value}
            self.parts.append(Prompt(fill(node.confirm, vals), static=False))
            return
        self.st["slots"][node.slot] = value
        self.goto(node.next)

    def goto(self, target: str | None) -> None:
        if target is None:
            self.end()
        else:
            self.enter(target)

    def handle(self, turn: TurnInput) -> None:
        if self.st["done"]:
            return
        node = self.flow.nodes[self.st["node"]]
        if isinstance(turn, NoMatch):
            self.miss("no_match")
        elif isinstance(turn, NoInput):
            buffered = self.st["dtmf"]
            if node.input == "digits" and len(buffered) >= node.min_digits:
                self.take_digits(node, buffered)
            else:
                self.miss("no_input")
        elif node.input != "intent" and isinstance(turn, Speech) and (
                hit := match(self.flow.intents, normalize.normalize_text(turn.text))):
            self.take_intent(node, hit)          # a global intent ("agent") at any node
        elif self.st["phase"] == "confirm":
            self.confirm(node, turn)
        elif node.input == "intent":
            self.intent(node, turn)
        elif node.input == "yes_no":
            answer = _yes_no(turn)
            if answer is None:
                self.miss("no_match")
            else:
                self.goto(node.yes if answer else node.no)
        elif node.input == "digits":
            self.digits(node, turn)
        elif node.input == "text":
            text = turn.text.strip() if isinstance(turn, Speech) else ""
            if text:
                self.accept(node, text)
            else:
                self.miss("no_match")

    def confirm(self, node: Node, turn: Speech | Dtmf) -> None:
        answer = _yes_no(turn)
        if answer is None:
            self.miss("no_match")
        elif answer:
            assert node.slot is not None
            self.st["slots"][node.slot] = self.st["pending"]
            self.goto(node.next)
        else:
            self.st.update(phase="ask", pending=None, dtmf="")
            self.say(node.reprompt or node.say)

    def intent(self, node: Node, turn: Speech | Dtmf) -> None:
        """The node's own intents first, then the flow's global ones (speech and DTMF)."""
        if isinstance(turn, Dtmf):
            key = {"dtmf": turn.digits}
        else:
            key = {"text": normalize.normalize_text(turn.text)}
        hit = match(node.intents, **key) or match(self.flow.intents, **key)
        if hit is None:
            self.miss("no_match")
        else:
            self.take_intent(node, hit)

    def take_intent(self, node: Node, hit: Intent) -> None:
        if node.slot and node.input == "intent":
            self.st["slots"][node.slot] = hit.name
        if not self.act(hit.actions):
            self.goto(hit.goto)

    def digits(self, node: Node, turn: Speech | Dtmf) -> None:
        if isinstance(turn, Dtmf):
            buffered = self.st["dtmf"] + turn.digits
            if node.terminator and node.terminator in buffered:
                self.take_digits(node, buffered.split(node.terminator, 1)[0])
            elif len(buffered) >= node.max_digits:
                self.take_digits(node, buffered[:node.max_digits])
            else:
                self.st["dtmf"] = buffered       # keep listening, say nothing
            return
        spoken = normalize.digits(turn.text)
        if spoken is None:
            self.miss("no_match")
        else:
            self.take_digits(node, self.st["dtmf"] + spoken)

    def take_digits(self, node: Node, value: str) -> None:
        value = "".join(c for c in value if c.isdigit())
        if node.min_digits <= len(value) <= node.max_digits:
            self.accept(node, value)
        else:
            self.miss("no_match")


def _yes_no(turn: Speech | Dtmf) -> bool | None:
    if isinstance(turn, Dtmf):
        return {"1": True, "2": False}.get(turn.digits[:1])
    return normalize.yes_no(turn.text)


class _FlowProposal(Proposal):
    def __init__(self, engine: FlowEngine, step: _Step, version: int) -> None:
        self._engine, self._step, self._version = engine, step, version

    def parts(self) -> Iterator[ReplyPart]:
        return iter(list(self._step.parts))

    def commit(self) -> None:
        self._engine._apply(self._step.st, self._version)

    @property
    def listen(self) -> Listen | None:
        return self._engine._listen_for(self._step.st)


class FlowEngine(DialogEngine):
    """Runs one ``Flow`` for one call. ``start()`` proposes the greeting."""

    def __init__(self, flow: Flow, ctx: CallContext) -> None:
        self.flow, self.ctx = flow, ctx
        self._state: dict[str, Any] = {
            "kind": "flow", "flow": flow.name, "node": None, "phase": "ask", "attempts": 0,
            "slots": {}, "dtmf": "", "pending": None, "done": False, "started": False,
        }
        self._version = 0

    @property
    def slots(self) -> dict[str, str]:
        """Values collected so far (copy)."""
        return dict(self._state["slots"])

    @property
    def node(self) -> Node | None:
        """The node waiting for input (None before start and after the end)."""
        nid = self._state["node"]
        return self.flow.nodes[nid] if nid else None

    def start(self) -> Proposal:
        step = _Step(self.flow, self.ctx, self._state)
        step.st["started"] = True
        step.enter(self.flow.start)
        return _FlowProposal(self, step, self._version)

    def propose(self, turn: TurnInput) -> Proposal:
        if not self._state["started"]:
            raise DialogError("propose() before start() was committed")
        step = _Step(self.flow, self.ctx, self._state)
        step.handle(turn)
        return _FlowProposal(self, step, self._version)

    def _apply(self, state: dict[str, Any], version: int) -> None:
        if version != self._version:
            raise StaleProposal("the dialog moved on since this proposal was made")
        self._state = state
        self._version += 1

    def _listen_for(self, st: Mapping[str, Any]) -> Listen | None:
        if st["done"] or st["node"] is None:
            return None
        node = self.flow.nodes[st["node"]]
        timeout = node.no_input_ms or self.flow.no_input_ms
        if st["phase"] == "confirm" or node.input == "yes_no":
            g = grammar(dataclasses.replace(node, input="yes_no"), self.flow.intents)
            return Listen(tuple(g or ()), True, None, "#", timeout)
        g = grammar(node, self.flow.intents)
        if node.input == "digits":
            return Listen(tuple(g or ()), True, node.max_digits, node.terminator, timeout)
        return Listen(tuple(g) if g else None, node.input == "intent", None, "#", timeout)

    @property
    def listen(self) -> Listen | None:
        return self._listen_for(self._state)

    def state(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    def restore(self, data: Mapping[str, Any]) -> None:
        want = set(self._state)
        if set(data) != want or data.get("flow") != self.flow.name:
            raise DialogError(f"state does not belong to flow {self.flow.name!r}")
        node = data["node"]
        if node is not None and node not in self.flow.nodes:
            raise DialogError(f"state names unknown node {node!r}")
        if data["phase"] not in ("ask", "confirm") or not isinstance(data["slots"], dict):
            raise DialogError("state has a bad phase or slots")
        self._state = copy.deepcopy(dict(data))
        self._version += 1


__all__ = ["FlowEngine"]
