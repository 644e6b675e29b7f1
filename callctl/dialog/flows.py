"""Scripted flows: one TOML file per route, loaded and validated once, run by ``FlowEngine``.

File format (``<dialog.flows_dir>/<route.flow>.toml``)::

    [flow]
    start = "greeting"            # first node (required)
    retries = 2                   # default retries per node
    on_fail = "agent"             # node once a node's retries are used up (default: goodbye)
    goodbye = "Sorry I could not help. Goodbye."
    no_match = "Sorry, I didn't catch that."   # default no-match prompt
    no_input = "Sorry, I didn't hear anything."

    [nodes.greeting]
    say = "Welcome. Billing, technical support, or an agent?"   # str or list of str
    audio = "welcome.wav"         # optional prerecorded file (relative to the flow file)
    input = "intent"              # none (default) | intent | yes_no | digits | text
    reprompt = "Please say billing, technical support, or agent."
    no_match = "..."; no_input = "..."; retries = 2; on_fail = "agent"; no_input_ms = 6000

    [nodes.greeting.intents.billing]
    phrases = ["billing", "pay my bill"]   # word sequences (also the recognizer grammar)
    keywords = ["invoice"]                  # any one word / phrase present
    regex = "bill(s|ing)?"                  # searched in the normalized text
    dtmf = "1"
    goto = "billing"

    [[nodes.billing.actions]]              # run when the node is entered
    type = "transfer"                      # transfer|hangup|set|event|webhook
    dest = "queue:billing"                 # extension, sip: URI or queue:<name>

Node kinds: ``none`` says its prompts, runs its actions and goes to ``next`` at once (or ends
the call when it has none); ``intent`` routes by intent; ``yes_no`` goes to ``yes``/``no``
(DTMF 1/2 too); ``digits`` collects ``min_digits``..``max_digits`` digits by speech or DTMF
(``terminator`` ends keying) into ``slot``; ``text`` stores free speech in ``slot``. ``digits``
and ``text`` may ``confirm = "You said {account:digits}. Right?"`` before going to ``next``.
Prompts and action values may use ``{slot}``, ``{slot:digits}`` (digits spaced for TTS),
``{caller}``, ``{did}``. Speech is matched on lower-cased, punctuation-free text; intents are
tried in file order, the first match wins. A node whose actions include a transfer or
hangup ends the dialog. Every problem found at load is reported as ``FILE:LINE: message``.

``FlowEngine`` state is a small dict (node, phase, attempts, slots, DTMF buffer); a step is a
pure function of (flow, state, input), so proposals are free and side-effect free.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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

KINDS = ("none", "intent", "yes_no", "digits", "text")
NODE_KEYS = frozenset({
    "say", "audio", "input", "reprompt", "no_match", "no_input", "retries", "on_fail", "next",
    "slot", "confirm", "min_digits", "max_digits", "terminator", "yes", "no", "no_input_ms",
    "intents", "actions",
})
FLOW_KEYS = frozenset({"start", "retries", "on_fail", "goodbye", "no_match", "no_input",
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
_PLACEHOLDER = re.compile(r"\{(\w+)(?::(digits))?\}")
_DEST = re.compile(r"(sips?:\S+|queue:[\w.@-]+|[\w*#+.@-]+)")
_CAUSE = re.compile(r"[A-Z_]+")
MAX_HOPS = 64


class FlowError(Exception):
    """A flow file (or a route's reference to one) is wrong. ``problems``: one line each,
    ``FILE:LINE: message``; ``str()`` is the first problem and the count of the rest."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more if problems else "flow error")


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


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
    no_input_ms: int | None = None
    slots: frozenset[str] = field(default_factory=frozenset)


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


class _Source:
    """Finds the line of a table or key in the raw TOML text (tomllib gives no positions)."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str]] = []
        for no, line in enumerate(self.lines, 1):
            m = self._HEADER.match(line)
            if m:
                self.headers.append((no, re.sub(r"[\s\"']", "", m.group(1))))

    def table(self, parts: tuple[str, ...], index: int = 0) -> int:
        """Line of ``[a.b]`` (the ``index``-th ``[[a.b]]``), else of its parent, else 1."""
        for n in range(len(parts), 0, -1):
            name = ".".join(parts[:n])
            found = [no for no, h in self.headers if h == name]
            if found:
                return found[min(index, len(found) - 1) if n == len(parts) else 0]
        return 1

    def key(self, parts: tuple[str, ...], key: str, index: int = 0) -> int:
        """Line of ``key = …`` inside table ``parts`` (falls back to the table's line)."""
        start = self.table(parts, index)
        pat = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for no in range(start, len(self.lines) + 1):
            if no > start and any(h == no for h, _ in self.headers):
                break
            if pat.match(self.lines[no - 1]):
                return no
        return start

    def at(self, line: int, message: str) -> str:
        return f"{self.path}:{line}: {message}"


class _Loader:
    """Builds a Flow from parsed TOML, collecting every problem with its line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.src = _Source(path, text)
        self.problems: list[str] = []

    def err(self, parts: tuple[str, ...], key: str | None, message: str, index: int = 0) -> None:
        line = self.src.key(parts, key, index) if key else self.src.table(parts, index)
        self.problems.append(self.src.at(line, message))

    def prompts(self, parts: tuple[str, ...], raw: Mapping[str, Any], key: str,
                audio: Any = None) -> tuple[Prompt, ...]:
        value = raw.get(key)
        if value is None:
            return ()
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            self.err(parts, key, f"{key}: must be a string or a list of strings")
            return ()
        files: list[str | None] = [None] * len(texts)
        if audio is not None:
            given = [audio] if isinstance(audio, str) else audio
            if (not isinstance(given, list) or len(given) != len(texts)
                    or not all(isinstance(a, str) for a in given)):
                self.err(parts, "audio", "audio: must be one file per say sentence")
            else:
                files = []
                for name in given:
                    file = (self.path.parent / name).resolve()
                    if not file.is_file():
                        self.err(parts, "audio", f"missing prompt file {file}")
                    files.append(str(file))
        return tuple(Prompt(t, a, static=not _PLACEHOLDER.search(t)) for t, a in zip(
            texts, files, strict=True))

    def actions(self, parts: tuple[str, ...], raw: Any) -> tuple[Action, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.err(parts, "actions", "actions: must be an array of tables ([[...actions]])")
            return ()
        out: list[Action] = []
        for i, a in enumerate(raw):
            where = (*parts, "actions")
            kind = a.get("type") if isinstance(a, dict) else None
            if kind not in ACTION_FIELDS:
                self.err(where, "type", f"action type {kind!r} unknown; allowed: "
                         + ", ".join(ACTION_FIELDS), i)
                continue
            assert isinstance(a, dict)
            required, optional = ACTION_FIELDS[kind]
            for k in sorted(required - a.keys()):
                self.err(where, "type", f"{kind} action: missing {k!r}", i)
            for k in sorted(a.keys() - required - optional - {"type"}):
                self.err(where, k, f"{kind} action: unknown key {k!r}", i)
            if not required <= a.keys():
                continue
            action = self._action(where, i, kind, a)
            if action is not None:
                out.append(action)
        return tuple(out)

    def _action(self, where: tuple[str, ...], i: int, kind: str, a: dict[str, Any]
                ) -> Action | None:
        if kind == "transfer":
            if not isinstance(a["dest"], str) or not _DEST.fullmatch(a["dest"]):
                self.err(where, "dest", f"transfer dest {a['dest']!r}: not an extension, "
                         "sip: URI or queue:<name>", i)
                return None
            return Transfer(a["dest"])
        if kind == "hangup":
            cause = a.get("cause", "NORMAL_CLEARING")
            if not isinstance(cause, str) or not _CAUSE.fullmatch(cause):
                self.err(where, "cause", f"hangup cause {cause!r}: must be like "
                         "NORMAL_CLEARING", i)
                return None
            return Hangup(cause)
        if kind == "set":
            if not isinstance(a["name"], str) or not re.fullmatch(r"\w+", a["name"]):
                self.err(where, "name", f"set: bad channel variable name {a['name']!r}", i)
                return None
            return SetVar(a["name"], str(a["value"]))
        if kind == "event":
            data = a.get("data", {})
            if not isinstance(data, dict):
                self.err(where, "data", "event data: must be a table", i)
                return None
            return EmitEvent(str(a["name"]), data)
        url, payload = a["url"], a.get("payload", {})
        deadline = a.get("deadline_ms", 1000)
        if not isinstance(url, str) or not re.match(r"https?://\S+$", url):
            self.err(where, "url", f"webhook url {url!r}: must be http:// or https://", i)
        elif not isinstance(payload, dict):
            self.err(where, "payload", "webhook payload: must be a table", i)
        elif not isinstance(deadline, int) or not 1 <= deadline <= 60000:
            self.err(where, "deadline_ms", "webhook deadline_ms: must be 1..60000", i)
        else:
            return Webhook(url, payload, deadline)
        return None

    def intents(self, node_parts: tuple[str, ...], raw: Any) -> tuple[Intent, ...]:
        if not isinstance(raw, dict) or not raw:
            self.err(node_parts, "input", "intent node needs at least one [...intents.NAME]")
            return ()
        out = []
        for name, spec in raw.items():
            parts = (*node_parts, "intents", name)
            if not isinstance(spec, dict):
                self.err(parts, None, f"intent {name}: must be a table")
                continue
            for k in sorted(spec.keys() - INTENT_KEYS):
                self.err(parts, k, f"intent {name}: unknown key {k!r}")
            words = {}
            for k in ("phrases", "keywords"):
                v = spec.get(k, [])
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    self.err(parts, k, f"intent {name}: {k} must be a list of strings")
                    v = []
                words[k] = tuple(normalize.normalize_text(x) for x in v)
            pattern = None
            if "regex" in spec:
                try:
                    pattern = re.compile(str(spec["regex"]))
                except re.error as e:
                    self.err(parts, "regex", f"intent {name}: bad regex {spec['regex']!r}: {e}")
            dtmf = str(spec.get("dtmf", ""))
            if not re.fullmatch(r"[0-9*#A-D]?", dtmf):
                self.err(parts, "dtmf", f"intent {name}: dtmf must be one key 0-9 * # A-D")
            if not (words["phrases"] or words["keywords"] or "regex" in spec or dtmf):
                self.err(parts, None, f"intent {name}: needs phrases, keywords, regex or dtmf")
            actions = self.actions(parts, spec.get("actions"))
            goto = spec.get("goto")
            if goto is None and not any(isinstance(a, Transfer | Hangup) for a in actions):
                self.err(parts, None, f"intent {name}: needs goto (or a transfer/hangup action)")
            out.append(Intent(name, words["phrases"], words["keywords"], pattern, dtmf,
                              str(goto) if goto is not None else None, actions))
        return tuple(out)

    def node(self, node_id: str, raw: Any, retries: int) -> Node | None:
        parts = ("nodes", node_id)
        if not isinstance(raw, dict):
            self.err(parts, None, f"node {node_id}: must be a table")
            return None
        for k in sorted(raw.keys() - NODE_KEYS):
            self.err(parts, k, f"node {node_id}: unknown key {k!r}")
        kind = raw.get("input", "none")
        if kind not in KINDS:
            self.err(parts, "input", f"node {node_id}: input {kind!r} unknown; allowed: "
                     + ", ".join(KINDS))
            kind = "none"
        ints: dict[str, int] = {}
        for k, default in (("retries", retries), ("min_digits", 1), ("max_digits", 20),
                           ("no_input_ms", 0)):
            v = raw.get(k, default)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                self.err(parts, k, f"node {node_id}: {k} must be a non-negative integer")
                v = default
            ints[k] = v
        if ints["min_digits"] > ints["max_digits"] or ints["max_digits"] == 0:
            self.err(parts, "min_digits", f"node {node_id}: need 1 <= min_digits <= max_digits")
        strs: dict[str, str | None] = {}
        for k in ("next", "on_fail", "slot", "confirm", "yes", "no", "terminator"):
            v = raw.get(k)
            if v is not None and not isinstance(v, str):
                self.err(parts, k, f"node {node_id}: {k} must be a string")
                v = None
            strs[k] = v
        node = Node(
            id=node_id, input=kind,
            say=self.prompts(parts, raw, "say", raw.get("audio")),
            reprompt=self.prompts(parts, raw, "reprompt"),
            no_match=self.prompts(parts, raw, "no_match"),
            no_input=self.prompts(parts, raw, "no_input"),
            retries=ints["retries"], on_fail=strs["on_fail"], next=strs["next"],
            slot=strs["slot"], confirm=strs["confirm"], min_digits=ints["min_digits"],
            max_digits=ints["max_digits"], terminator=strs["terminator"] or "#",
            yes=strs["yes"], no=strs["no"], no_input_ms=ints["no_input_ms"] or None,
            intents=self.intents(parts, raw.get("intents")) if kind == "intent" else (),
            actions=self.actions(parts, raw.get("actions")),
        )
        if "audio" in raw and "say" not in raw:
            self.err(parts, "audio", f"node {node_id}: audio needs a say text (its transcript)")
        if kind != "none" and not node.say and not node.terminal:
            self.err(parts, "input", f"node {node_id}: a node that asks needs a say prompt")
        if kind == "yes_no" and not (node.yes and node.no):
            self.err(parts, "input", f"node {node_id}: yes_no node needs both yes and no")
        if kind in ("digits", "text") and not node.next and not node.terminal:
            self.err(parts, "input", f"node {node_id}: {kind} node needs next")
        if kind in ("digits", "text") and not node.slot:
            self.err(parts, "input", f"node {node_id}: {kind} node needs slot")
        if "intents" in raw and kind != "intent":
            self.err(parts, "intents", f"node {node_id}: intents need input = \"intent\"")
        return node

    def flow(self, name: str, data: Mapping[str, Any]) -> Flow | None:
        head = data.get("flow", {})
        if not isinstance(head, dict):
            head = {}
        for k in sorted(data.keys() - {"flow", "nodes"}):
            self.err((k,), None, f"unknown top-level table {k!r}; allowed: flow, nodes")
        for k in sorted(head.keys() - FLOW_KEYS):
            self.err(("flow",), k, f"flow: unknown key {k!r}")
        retries = head.get("retries", 2)
        if not isinstance(retries, int) or retries < 0:
            self.err(("flow",), "retries", "flow: retries must be a non-negative integer")
            retries = 2
        raw_nodes = data.get("nodes")
        if not isinstance(raw_nodes, dict) or not raw_nodes:
            self.err(("flow",), None, "flow has no [nodes.NAME] tables")
            return None
        nodes = {nid: n for nid, raw in raw_nodes.items()
                 if (n := self.node(nid, raw, retries)) is not None}
        start = head.get("start")
        if not isinstance(start, str):
            self.err(("flow",), None, "flow: missing start = \"NODE\"")
            return None
        if start not in raw_nodes:
            self.err(("flow",), "start", f"flow: start node {start!r} is not defined")
            return None
        on_fail = head.get("on_fail")
        if on_fail is not None and on_fail not in raw_nodes:
            self.err(("flow",), "on_fail", f"flow: on_fail node {on_fail!r} is not defined")
        self._links(nodes)
        self._reachable(nodes, start, on_fail)
        slots = frozenset(n.slot for n in nodes.values() if n.slot)
        return Flow(
            name=name, path=self.path, start=start, nodes=nodes,
            on_fail=on_fail if isinstance(on_fail, str) else None,
            goodbye=str(head.get("goodbye", DEFAULT_GOODBYE)),
            no_input_ms=head.get("no_input_ms") if isinstance(head.get("no_input_ms"), int)
            else None,
            slots=slots,
        )

    def _links(self, nodes: Mapping[str, Node]) -> None:
        for n in nodes.values():
            parts = ("nodes", n.id)
            for key in ("next", "yes", "no", "on_fail"):
                target = getattr(n, key)
                if target and target not in nodes:
                    self.err(parts, key, f"node {n.id}: {key} goes to unknown node {target!r}")
            for i in n.intents:
                if i.goto and i.goto not in nodes:
                    self.err((*parts, "intents", i.name), "goto",
                             f"intent {i.name}: goto unknown node {i.goto!r}")
            # A chain of prompt-only nodes that loops would never wait for the caller.
            seen, cur = {n.id}, n
            while cur.input == "none" and not cur.terminal and cur.next and cur.next in nodes:
                cur = nodes[cur.next]
                if cur.id in seen:
                    if cur.id == n.id:
                        self.err(parts, "next", f"node {n.id}: loop of nodes without input")
                    break
                seen.add(cur.id)

    def _reachable(self, nodes: Mapping[str, Node], start: str, on_fail: Any) -> None:
        seen: set[str] = set()
        todo = [start] + ([on_fail] if isinstance(on_fail, str) else [])
        while todo:
            nid = todo.pop()
            if nid in seen or nid not in nodes:
                continue
            seen.add(nid)
            todo.extend(nodes[nid].targets())
        for nid in nodes:
            if nid not in seen:
                self.err(("nodes", nid), None, f"node {nid}: unreachable from start {start!r}")


def check_flow(path: Path | str) -> tuple[Flow | None, list[str]]:
    """Load ``path``; returns (flow or None, problems as ``FILE:LINE: message`` lines)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        return None, [f"{path}:1: cannot read flow file: {e.strerror}"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        return None, [f"{path}:{m.group(1) if m else 1}: not valid TOML: {e}"]
    loader = _Loader(path, text)
    flow = loader.flow(path.stem, data)
    return (flow if not loader.problems else None), loader.problems


def load_flow(path: Path | str) -> Flow:
    """Load and validate one flow file; raises FlowError listing every problem."""
    flow, problems = check_flow(path)
    if problems or flow is None:
        raise FlowError(problems or [f"{path}:1: flow could not be loaded"])
    return flow


def flows_dir(dialog_flows_dir: str, config_path: Path | str | None = None) -> Path:
    """``dialog.flows_dir`` resolved: absolute as is, relative to the config file's directory
    (or the working directory when there is no config file)."""
    p = Path(dialog_flows_dir)
    if p.is_absolute():
        return p
    base = Path(config_path).resolve().parent if config_path else Path.cwd()
    return base / p


def _route_flows(cfg: Any) -> list[tuple[str, str]]:
    """(flow name, ``routes[i].flow`` key) for every flow the config refers to."""
    out = [(r.flow, f"routes[{i}].flow") for i, r in enumerate(cfg.routes)]
    if cfg.routing.unknown_action == "default":
        out.append((cfg.routing.default_flow, "routing.default_flow"))
    return out


def _config_line(config_path: Path | str | None, flow: str) -> tuple[str, int]:
    if config_path is None or not Path(config_path).is_file():
        return str(config_path or "<config>"), 1
    lines = Path(config_path).read_text(encoding="utf-8").splitlines()
    pat = re.compile(rf"^\s*(flow|default_flow)\s*=\s*[\"']{re.escape(flow)}[\"']")
    return str(config_path), next((i for i, t in enumerate(lines, 1) if pat.match(t)), 1)


def load_flows(cfg: Any, config_path: Path | str | None = None,
               directory: Path | str | None = None) -> tuple[dict[str, Flow], list[str]]:
    """Every flow the routes use, loaded from ``directory`` (default: ``dialog.flows_dir``
    resolved against the config file), and all problems as ``FILE:LINE: message``.

    A route with flow ``"llm"`` needs no file (it needs ``dialog.llm_url``).
    """
    base = Path(directory) if directory else flows_dir(cfg.dialog.flows_dir, config_path)
    flows: dict[str, Flow] = {}
    problems: list[str] = []
    for name, key in _route_flows(cfg):
        if name in flows:
            continue
        file, line = _config_line(config_path, name)
        if name == "llm":
            if not cfg.dialog.llm_url:
                problems.append(f"{file}:{line}: {key}: \"llm\" needs dialog.llm_url")
            continue
        if not name or not re.fullmatch(r"[\w.-]+", name):
            problems.append(f"{file}:{line}: {key}: bad flow name {name!r}")
            continue
        path = base / f"{name}.toml"
        if not path.is_file():
            problems.append(f"{file}:{line}: {key}: flow file {path} not found")
            continue
        flow, found = check_flow(path)
        problems.extend(found)
        if flow is not None:
            flows[name] = flow
    return flows, problems


def check_config(cfg: Any, config_path: Path | str | None = None) -> list[str]:
    """Problems with the flows the config's routes refer to, one ``FILE:LINE: msg`` each."""
    return load_flows(cfg, config_path)[1]


def static_prompts(flow: Flow) -> list[str]:
    """Every fixed sentence the flow can speak (for TTS pre-rendering), without duplicates.
    Prompts with placeholders or a prerecorded audio file are left out."""
    seen: dict[str, None] = {}
    defaults = [DEFAULT_NO_MATCH, DEFAULT_NO_INPUT, flow.goodbye]
    for node in flow.nodes.values():
        for p in (*node.say, *node.reprompt, *node.no_match, *node.no_input):
            if p.static and p.audio is None:
                seen[p.text] = None
    for d in defaults:
        if not _PLACEHOLDER.search(d):
            seen[d] = None
    return list(seen)


def grammar(node: Node) -> list[str] | None:
    """Phrases a recognizer may be restricted to at ``node``; None: open vocabulary (free
    text, or an intent only a regex can describe)."""
    if node.input == "intent":
        if any(i.pattern is not None and not (i.phrases or i.keywords) for i in node.intents):
            return None
        words = dict.fromkeys(w for i in node.intents for w in (*i.phrases, *i.keywords))
        return list(words) or None
    if node.input == "yes_no":
        return list(normalize.YES_NO_WORDS)
    if node.input == "digits":
        return list(normalize.NUMBER_WORDS)
    return None


# --------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------


def fill(template: str, values: Mapping[str, str]) -> str:
    """``{name}`` / ``{name:digits}`` replaced from ``values`` (unknown names left as is)."""
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            return m.group(0)
        v = str(values[m.group(1)])
        return " ".join(v) if m.group(2) == "digits" else v
    return _PLACEHOLDER.sub(one, template)


def _fill_any(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return fill(value, values)
    if isinstance(value, Mapping):
        return {k: _fill_any(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_any(v, values) for v in value]
    return value


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
            elif isinstance(a, SetVar):
                a = SetVar(a.name, fill(a.value, vals))
            elif isinstance(a, EmitEvent):
                a = EmitEvent(a.name, _fill_any(a.data, vals))
            elif isinstance(a, Webhook):
                a = Webhook(fill(a.url, vals), _fill_any(a.payload, vals), a.deadline_ms)
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
            self.say(node.no_input or (Prompt(DEFAULT_NO_INPUT),))
        else:
            self.say(node.no_match or (Prompt(DEFAULT_NO_MATCH),))
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
        if isinstance(turn, Dtmf):
            hit = next((i for i in node.intents if i.dtmf and i.dtmf == turn.digits[:1]), None)
        else:
            text = normalize.normalize_text(turn.text)
            hit = next((i for i in node.intents if text and i.matches(text)), None)
        if hit is None:
            self.miss("no_match")
            return
        if node.slot:
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
            return Listen(tuple(normalize.YES_NO_WORDS), True, None, "#", timeout)
        g = grammar(node)
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


__all__ = [
    "Flow", "FlowEngine", "FlowError", "Intent", "Node", "check_config", "check_flow",
    "fill", "flows_dir", "grammar", "load_flow", "load_flows", "static_prompts",
]
