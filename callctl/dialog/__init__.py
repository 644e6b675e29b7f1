"""What to say: the dialog engines (scripted flows per route, optional LLM).

The CallSession uses ``Dialogs`` (built once at start-up) to get one ``DialogEngine`` per call,
then drives it with turn inputs (see ``callctl.dialog.base`` for the full contract)::

    dialogs = Dialogs(cfg, config_path)              # loads + validates every route's flow
    engine = dialogs.engine(route, CallContext(call_uuid, caller, did, route.flow))
    reply = engine.open()                              # greeting: Reply(prompts, actions, listen)
    p = engine.propose(Speech("billing please"))       # speculative, no state change
    for part in p.parts(): ...                         # Prompt sentences, then actions
    p.commit()                                         # or p.cancel() if the turn changed
    store.save(engine.state()); engine.restore(saved)  # persistence / resume
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from callctl.dialog.base import (
    Action,
    CallContext,
    CollectDigits,
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
    Reply,
    ReplyPart,
    SetVar,
    Speech,
    StaleProposal,
    Transfer,
    TurnInput,
    Webhook,
)
from callctl.dialog.flows import Flow, FlowEngine, FlowError, load_flows, static_prompts
from callctl.dialog.llm import (
    FALLBACK_REPEAT,
    FALLBACK_SORRY,
    FALLBACK_TRANSFER,
    LlmEngine,
    LlmSettings,
)


class Dialogs:
    """Every route's dialog, loaded once. Raises FlowError (all problems) if a flow is bad.

    ``directory`` overrides ``dialog.flows_dir`` (which is otherwise resolved against the
    directory of ``config_path`` when relative).
    """

    def __init__(self, cfg: Any, config_path: Path | str | None = None,
                 directory: Path | str | None = None) -> None:
        self.cfg = cfg
        flows, problems = load_flows(cfg, config_path, directory)
        if problems:
            raise FlowError(problems)
        self.flows: Mapping[str, Flow] = flows

    def engine(self, route: Any, ctx: CallContext) -> DialogEngine:
        """A fresh engine for one call on ``route`` (a RouteConfig or a flow name)."""
        name = route if isinstance(route, str) else route.flow
        if name == "llm":
            return LlmEngine(LlmSettings.from_config(self.cfg.dialog), ctx)
        flow = self.flows.get(name)
        if flow is None:
            raise DialogError(f"no flow {name!r} loaded (routes use: {', '.join(self.flows)})")
        return FlowEngine(flow, ctx)

    def static_prompts(self) -> list[str]:
        """Every fixed sentence any route may speak (for TTS pre-rendering at start-up)."""
        out: dict[str, None] = {}
        for flow in self.flows.values():
            out.update(dict.fromkeys(static_prompts(flow)))
        if self.cfg.dialog.llm_url:
            d = self.cfg.dialog
            out.update(dict.fromkeys([d.llm_greeting, d.llm_filler, FALLBACK_SORRY,
                                      FALLBACK_TRANSFER, FALLBACK_REPEAT]))
        return list(out)


__all__ = [
    "Action", "CallContext", "CollectDigits", "DialogEngine", "DialogError", "Dialogs", "Dtmf",
    "EmitEvent", "Flow", "FlowEngine", "FlowError", "Hangup", "Listen", "LlmEngine",
    "LlmSettings", "NoInput", "NoMatch", "Prompt", "Proposal", "Reply", "ReplyPart", "SetVar",
    "Speech", "StaleProposal", "Transfer", "TurnInput", "Webhook",
]
