"""``callctl.resume``: a dialog restored from its stored state says the resume prompt and
the question it was waiting on; state that does not fit means "start over"."""

from __future__ import annotations

from typing import Any

import pytest
from testkit import REPO

from callctl import config
from callctl.dialog import Dialogs
from callctl.dialog.base import CallContext, DialogEngine, Dtmf
from callctl.resume import flow_node, resume_reply
from callctl.store import CallRecord

DID = "+15551230000"
SORRY = "Sorry about that. Where were we?"


@pytest.fixture(scope="module")
def dialogs() -> Dialogs:
    cfg = config.Config(
        dialog=config.DialogConfig(flows_dir=str(REPO / "callctl" / "examples" / "flows"),
                                   llm_url="http://127.0.0.1:9/v1"),   # never called
        routes=(config.RouteConfig(did=DID, flow="account"),
                config.RouteConfig(did="2", flow="front_desk"),
                config.RouteConfig(did="3", flow="llm")))
    return Dialogs(cfg)


def engine(dialogs: Dialogs, flow: str = "account") -> DialogEngine:
    return dialogs.engine(flow, CallContext("u1", "+15557654321", DID, flow, "en"))


def record(state: dict[str, Any]) -> CallRecord:
    return CallRecord(uuid="u1", node="node-a", state="answered", flow_node=flow_node(state),
                      dialog_state=state)


def test_resume_at_a_pending_confirmation(dialogs: Dialogs) -> None:
    before = engine(dialogs)
    before.open()
    confirm = before.respond(Dtmf("12345678"))
    after = engine(dialogs)
    reply = resume_reply(after, record(before.state()), SORRY)
    assert reply is not None
    assert reply.sentences == [SORRY, *confirm.sentences]
    assert reply.actions == () and reply.listen == before.listen
    assert after.state() == before.state() and flow_node(after.state()) == "ask_account"
    # the flow moves on from there: "1" confirms the digits keyed before
    done = after.respond(Dtmf("1"))
    assert "Connecting you" in " ".join(done.sentences)
    assert after.state()["slots"] == {"account": "12345678"}


def test_resume_while_asking_repeats_the_question_without_an_empty_prompt(
        dialogs: Dialogs) -> None:
    before = engine(dialogs)
    greeting = before.open()
    reply = resume_reply(engine(dialogs), record(before.state()), "  ")
    assert reply is not None and reply.sentences == greeting.sentences


@pytest.mark.parametrize("state", [
    {"kind": "flow", "flow": "front_desk", "node": None},     # another flow's state
    {"garbage": True},
    {},
])
def test_state_that_does_not_fit_means_start_over(dialogs: Dialogs,
                                                  state: dict[str, Any]) -> None:
    fresh = engine(dialogs)
    untouched = fresh.state()
    assert resume_reply(fresh, record(state), SORRY) is None
    assert fresh.state() == untouched


def test_a_dialog_that_was_over_is_not_resumed(dialogs: Dialogs) -> None:
    before = engine(dialogs)
    before.open()
    before.respond(Dtmf("12345678"))
    before.respond(Dtmf("1"))                                 # transferred: over
    assert before.listen is None and flow_node(before.state()) == ""
    assert resume_reply(engine(dialogs), record(before.state()), SORRY) is None


def test_llm_history_comes_back_and_the_bot_listens(dialogs: Dialogs) -> None:
    history = [{"role": "user", "content": "I need to move my appointment"},
               {"role": "assistant", "content": "Sure, to which day?"}]
    state = {"kind": "llm", "history": history, "done": False, "max_digits": None}
    llm = engine(dialogs, "llm")
    reply = resume_reply(llm, record(state), SORRY)
    assert reply is not None and reply.sentences == [SORRY] and reply.listen is not None
    assert llm.state()["history"] == history and flow_node(llm.state()) == ""
