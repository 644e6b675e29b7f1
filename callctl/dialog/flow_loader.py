"""Loading and validating flow files: every problem found, each as ``FILE:LINE: message``.

How this works: tomllib parses the file (a syntax error is one problem with its line);
``_Loader`` walks the data building frozen ``Node``/``Intent`` objects and collects every
problem instead of stopping at the first; ``_Source`` finds the line of the table header or
key each problem is about by searching the raw text (tomllib gives no positions). Then links
(unknown nodes), loops of nodes without input and reachability from ``start`` are checked.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from callctl.dialog import normalize
from callctl.dialog.base import (
    Action,
    EmitEvent,
    Hangup,
    Prompt,
    SetVar,
    Transfer,
    Webhook,
)
from callctl.dialog.flow_model import (
    ACTION_FIELDS,
    CAUSE,
    DEFAULT_GOODBYE,
    DEFAULT_NO_INPUT,
    DEFAULT_NO_MATCH,
    DEST,
    FLOW_KEYS,
    INTENT_KEYS,
    KINDS,
    NODE_KEYS,
    PLACEHOLDER,
    Flow,
    FlowError,
    Intent,
    Node,
)


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

    def text(self, head: Mapping[str, Any], key: str, default: str) -> str:
        """A plain text setting of ``[flow]`` (no placeholders: it is pre-rendered)."""
        value = head.get(key, default)
        if not isinstance(value, str) or PLACEHOLDER.search(value):
            self.err(("flow",), key, f"flow: {key} must be a string without {{placeholders}}")
            return default
        return value

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
        return tuple(Prompt(t, a, static=not PLACEHOLDER.search(t)) for t, a in zip(
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
            if not isinstance(a["dest"], str) or not DEST.fullmatch(a["dest"]):
                self.err(where, "dest", f"transfer dest {a['dest']!r}: not an extension, "
                         "sip: URI or queue:<name>", i)
                return None
            return Transfer(a["dest"])
        if kind == "hangup":
            cause = a.get("cause", "NORMAL_CLEARING")
            if not isinstance(cause, str) or not CAUSE.fullmatch(cause):
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
        intents = self.intents(("flow",), head["intents"]) if "intents" in head else ()
        self._links(nodes, intents)
        self._reachable(nodes, start, on_fail, intents)
        slots = frozenset(n.slot for n in nodes.values() if n.slot)
        return Flow(
            name=name, path=self.path, start=start, nodes=nodes,
            on_fail=on_fail if isinstance(on_fail, str) else None,
            goodbye=self.text(head, "goodbye", DEFAULT_GOODBYE),
            no_match=self.text(head, "no_match", DEFAULT_NO_MATCH),
            no_input=self.text(head, "no_input", DEFAULT_NO_INPUT),
            no_input_ms=head.get("no_input_ms") if isinstance(head.get("no_input_ms"), int)
            else None,
            slots=slots, intents=intents,
        )

    def _links(self, nodes: Mapping[str, Node], intents: tuple[Intent, ...]) -> None:
        for i in intents:
            if i.goto and i.goto not in nodes:
                self.err(("flow", "intents", i.name), "goto",
                         f"intent {i.name}: goto unknown node {i.goto!r}")
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

    def _reachable(self, nodes: Mapping[str, Node], start: str, on_fail: Any,
                   intents: tuple[Intent, ...]) -> None:
        seen: set[str] = set()
        todo = [start, *(i.goto for i in intents if i.goto)]
        todo += [on_fail] if isinstance(on_fail, str) else []
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


__all__ = ["check_flow", "load_flow"]
