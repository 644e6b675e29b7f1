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
    no_match = "Sorry?"           # also: no_input, retries, on_fail, no_input_ms, slot

    [nodes.greeting.intents.billing]
    phrases = ["billing", "pay my bill"]   # word sequences (also the recognizer grammar)
    keywords = ["invoice"]                  # any one word / phrase present
    regex = "bill(s|ing)?"                  # searched in the normalized text
    dtmf = "1"
    goto = "billing"

    [flow.intents.agent]                   # global: heard at every node (see below)
    phrases = ["agent", "operator"]
    goto = "agent"

    [[nodes.billing.actions]]              # run when the node is entered
    type = "transfer"                      # transfer|hangup|set|event|webhook
    dest = "queue:billing"                 # extension, sip: URI or queue:<name>

Global intents, ``[flow.intents.NAME]`` (same keys), are heard at every node that takes
input: by speech before the node's own input (so "agent" escapes a digit or yes/no node),
and at intent nodes after the node's own intents (there by DTMF too).

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

Modules: ``flow_model`` (frozen Flow/Node/Intent, templates, grammars), ``flow_loader`` (one
file → Flow or problems), ``flow_engine`` (FlowEngine); this module adds the route level
(which flows the config needs, where they live, ``check_config`` for ``callctl check-config``)
and re-exports the public names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from callctl.dialog.flow_engine import FlowEngine
from callctl.dialog.flow_loader import check_flow, load_flow
from callctl.dialog.flow_model import Flow, FlowError, Intent, Node, fill, grammar, static_prompts


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


__all__ = [
    "Flow", "FlowEngine", "FlowError", "Intent", "Node", "check_config", "check_flow",
    "fill", "flows_dir", "grammar", "load_flow", "load_flows", "static_prompts",
]
