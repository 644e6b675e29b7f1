"""Flow files for the dialog and conversation tests (``from flow_rig import …``): build a flow
as a dict with a few node builders, write it as TOML (``write_flow_file``), or load it straight
into a ``Flow`` (``load_flow_text``). The TOML writer checks itself: what it writes parses back
(tomllib) to exactly the dict it was given."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from callctl.dialog.flows import Flow, load_flow

Table = dict[str, Any]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)     # a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML form for {v!r}")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else json.dumps(k)


def _tables(v: Any) -> bool:
    """A list written as ``[[array.of.tables]]``."""
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _section(v: Any, top: bool) -> bool:
    """A dict written as its own ``[section]``: every top-level one, and any that holds
    tables (a node with intents or actions); others are written inline."""
    return isinstance(v, dict) and (top or any(isinstance(x, dict) or _tables(x)
                                               for x in v.values()))


def _emit(table: Table, prefix: str, out: list[str]) -> None:
    top = not prefix
    out += [f"{_key(k)} = {_value(v)}" for k, v in table.items()
            if not _section(v, top) and not _tables(v)]
    for k, v in table.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if _section(v, top):
            out.append(f"\n[{name}]")
            _emit(v, name, out)
        elif _tables(v):
            for item in v:
                out.append(f"\n[[{name}]]")
                _emit(item, name, out)


def flow_toml(flow: Table) -> str:
    """The TOML text of ``flow`` (``{"flow": {...}, "nodes": {...}}``)."""
    out: list[str] = []
    _emit(flow, "", out)
    text = "\n".join(out).lstrip("\n") + "\n"
    assert tomllib.loads(text) == flow, text
    return text


def flow_table(start: str, nodes: Table, **settings: Any) -> Table:
    """A flow dict: ``[flow] start = …`` plus ``settings`` (retries, on_fail, intents…)."""
    return {"flow": {"start": start, **settings}, "nodes": nodes}


def ask(say: str, intents: Table, **extra: Any) -> Table:
    """An ``input = "intent"`` node; ``intents`` maps a name to its table (``goto_on``)."""
    return {"say": say, "input": "intent", **extra, "intents": intents}


def goto_on(phrases: list[str], goto: str, **extra: Any) -> Table:
    """An intent: these phrases (plus e.g. ``dtmf``) lead to node ``goto``."""
    return {"phrases": phrases, **extra, "goto": goto}


def then_hang_up(say: str | list[str], *before: Table, **extra: Any) -> Table:
    """A node that says ``say`` (with ``extra`` keys, e.g. ``audio``), runs the ``before``
    actions, then hangs up."""
    return {"say": say, **extra, "actions": [*before, {"type": "hangup"}]}


def then_transfer(say: str, dest: str, *before: Table) -> Table:
    """A node that says ``say``, runs the ``before`` actions, then transfers to ``dest``."""
    return {"say": say, "actions": [*before, {"type": "transfer", "dest": dest}]}


def write_flow_file(path: Path, flow_: Table | str) -> Path:
    """Write ``flow_`` (a dict or TOML text) to ``path`` (parents made); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(flow_ if isinstance(flow_, str) else flow_toml(flow_))
    return path


def load_flow_text(tmp_path: Path, flow_: Table | str, name: str = "f") -> Flow:
    """``load_flow`` of ``flow_`` written to ``tmp_path/<name>.toml``."""
    return load_flow(write_flow_file(tmp_path / f"{name}.toml", flow_))
