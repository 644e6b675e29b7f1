"""Resuming a call after a daemon restart: the dialog picks up where the stored state left it.

How this works: the outbound server found live state for the call (``Ownership.acquire``) and
put it in ``CallSession.resume_from``; ``Conversation.on_start`` asks ``resume_reply`` for
the first thing to say instead of the dialog's greeting. ``resume_reply`` restores the
engine from ``record.dialog_state`` (flows: node, phase, slots, attempts; LLM: the chat
history) and answers the configured ``dialog.resume_prompt`` ("Sorry about that. Where were
we?") followed by the current question again (a flow node's prompt, or its confirmation with
the pending value); an LLM call just listens after the prompt. ``None`` means "start over":
the state does not fit the route's dialog (flow changed or renamed), or the dialog was over.

Contract: pure (no I/O); never raises for bad stored state (returns None and the caller
starts the call afresh, logged).
"""

from __future__ import annotations

from typing import Any

from callctl.dialog.base import DialogEngine, DialogError, Prompt, Reply
from callctl.dialog.flow_engine import FlowEngine, _Step
from callctl.dialog.flow_model import fill
from callctl.store import CallRecord

#: ``CallRecord`` fields a resumed call carries over from its stored record (``node`` becomes
#: the resuming daemon's, ``state`` ``answered``).
RESUMED_FIELDS = ("started_at", "answered_at", "flow_node", "dialog_state", "llm_history",
                  "turns")


def flow_node(state: dict[str, Any]) -> str:
    """The flow position named by a dialog ``state()`` (``""`` for an LLM or ended flow)."""
    node = state.get("node")
    return node if isinstance(node, str) else ""


def current_question(dialog: DialogEngine) -> list[Prompt]:
    """What the dialog is waiting for an answer to, as prompts (empty if nothing fixed)."""
    if not isinstance(dialog, FlowEngine) or dialog.node is None:
        return []
    node, st = dialog.node, dialog.state()
    step = _Step(dialog.flow, dialog.ctx, st)
    if st["phase"] == "confirm" and node.confirm and node.slot:
        vals = {**step.values(), node.slot: str(st.get("pending") or "")}
        return [Prompt(fill(node.confirm, vals), static=False)]
    step.say(node.say)
    return [p for p in step.parts if isinstance(p, Prompt)]


def resume_reply(dialog: DialogEngine, record: CallRecord, prompt: str,
                 log: Any = None) -> Reply | None:
    """Restore ``dialog`` from ``record`` and return what to say first (module docstring)."""
    try:
        dialog.restore(record.dialog_state)
    except (DialogError, KeyError, TypeError, ValueError) as e:
        if log is not None:
            log.warning("conversation.resume_impossible", error=str(e)[:200],
                        flow_node=record.flow_node)
        return None
    if dialog.listen is None:
        return None
    prompts = [Prompt(prompt)] if prompt.strip() else []
    return Reply(tuple(prompts + current_question(dialog)), (), dialog.listen)
