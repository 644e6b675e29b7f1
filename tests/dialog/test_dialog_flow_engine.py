"""FlowEngine: every node kind and transition, retries, no-input/no-match, actions, state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flow_rig import ask, flow_table, goto_on, load_flow_text, then_transfer, write_flow_file

from callctl.dialog.base import (
    CallContext,
    DialogError,
    Dtmf,
    EmitEvent,
    Hangup,
    NoInput,
    NoMatch,
    Prompt,
    Reply,
    SetVar,
    Speech,
    StaleProposal,
    Transfer,
    TurnInput,
    Webhook,
    part_from_dict,
    part_to_dict,
)
from callctl.dialog.flows import Flow, FlowEngine, grammar, load_flow, static_prompts

FLOW = flow_table("hello", {
    "hello": {"say": ["Hello {caller}.", "Welcome."], "next": "menu"},
    "menu": ask("Say sales, support, or your name.", {
        "sales": goto_on(["sales", "buy something"], "ask_code", dtmf="1"),
        "support": {"keywords": ["support", "help"], "dtmf": "2", "goto": "ask_name"},
        "refund": {"regex": "refund(s|ed)?", "goto": "sure"},
        "quit": {"phrases": ["quit"], "dtmf": "9",
                 "actions": [{"type": "hangup", "cause": "NORMAL_CLEARING"}]},
    }, slot="choice", reprompt="Sales or support?", no_match="I did not get that.",
        no_input="Are you there?", on_fail="operator"),
    "ask_code": {"say": "Your four digit code?", "input": "digits", "slot": "code",
                 "min_digits": 4, "max_digits": 4, "confirm": "Code {code:digits}. Right?",
                 "next": "sure"},
    "ask_name": {"say": "Your name?", "input": "text", "slot": "name", "next": "sure"},
    "sure": {"say": "Shall I connect you?", "input": "yes_no", "yes": "connect", "no": "bye"},
    "connect": then_transfer(
        "Connecting.", "sip:agent@10.0.0.5",
        {"type": "set", "name": "code", "value": "{code}"},
        {"type": "event", "name": "connected", "data": {"code": "{code}", "who": "{caller}"}},
        {"type": "webhook", "url": "http://127.0.0.1:9/hook", "payload": {"code": "{code}"},
         "deadline_ms": 300}),
    "operator": then_transfer("Let me get an operator.", "queue:operators"),
    "bye": {"say": "Bye."},
}, retries=1, goodbye="Goodbye from the flow.")


@pytest.fixture
def flow_path(tmp_path: Path) -> Path:
    return write_flow_file(tmp_path / "test.toml", FLOW)


@pytest.fixture
def engine(flow_path: Path) -> FlowEngine:
    e = FlowEngine(load_flow(flow_path), CallContext("uuid-1", caller="+15550001111"))
    e.open()
    return e


def opened(flow: Flow) -> FlowEngine:
    """A FlowEngine on ``flow`` for call ``u``, started."""
    e = FlowEngine(flow, CallContext("u"))
    e.open()
    return e


def texts(reply: Reply) -> list[str]:
    return reply.sentences


def test_start_says_message_node_then_asks(flow_path: Path) -> None:
    e = FlowEngine(load_flow(flow_path), CallContext("u", caller="+15550001111"))
    reply = e.open()
    assert texts(reply) == ["Hello +15550001111.", "Welcome.", "Say sales, support, or your name."]
    assert reply.prompts[0].static is False and reply.prompts[1].static is True
    assert e.node is not None and e.node.id == "menu"
    assert e.listen is not None and e.listen.grammar is None   # regex intent: open vocabulary


def test_propose_before_start_is_misuse(flow_path: Path) -> None:
    e = FlowEngine(load_flow(flow_path), CallContext("u"))
    with pytest.raises(DialogError):
        e.propose(Speech("sales"))


def test_intent_by_phrase_keyword_regex_and_dtmf(engine: FlowEngine) -> None:
    state = engine.state()
    cases: list[tuple[TurnInput, str]] = [
        (Speech("I want to buy something"), "ask_code"),
        (Speech("Support, please!"), "ask_name"),
        (Speech("can I get a refunded order"), "sure"),
        (Dtmf("1"), "ask_code"),
        (Dtmf("2"), "ask_name"),
    ]
    for turn, node in cases:
        engine.restore(state)
        engine.respond(turn)
        assert engine.node is not None and engine.node.id == node, turn
    assert engine.slots["choice"] == "support"


def test_intent_action_ends_dialog(engine: FlowEngine) -> None:
    reply = engine.respond(Speech("quit"))
    assert reply.actions == (Hangup("NORMAL_CLEARING"),)
    assert reply.done and engine.listen is None
    assert engine.respond(Speech("hello?")).parts() == []   # after the end: nothing


def test_no_match_reprompts_then_goes_to_on_fail(engine: FlowEngine) -> None:
    r1 = engine.respond(Speech("pizza"))
    assert texts(r1) == ["I did not get that.", "Sales or support?"]
    assert engine.state()["attempts"] == 1
    r2 = engine.respond(NoMatch())
    assert texts(r2) == ["Let me get an operator."]
    assert r2.actions == (Transfer("queue:operators"),)
    assert isinstance(r2.actions[0], Transfer)
    assert r2.actions[0].kind == "queue" and r2.actions[0].target == "operators"


def test_no_input_prompt(engine: FlowEngine) -> None:
    assert texts(engine.respond(NoInput())) == ["Are you there?", "Sales or support?"]


def test_digits_by_speech_with_confirmation(engine: FlowEngine) -> None:
    engine.respond(Dtmf("1"))
    listen = engine.listen
    assert listen is not None and listen.max_digits == 4 and "five" in (listen.grammar or ())
    r = engine.respond(Speech("four five six seven"))
    assert texts(r) == ["Code 4 5 6 7. Right?"]
    assert engine.listen is not None and "yes" in (engine.listen.grammar or ())
    r = engine.respond(Speech("yes"))
    assert texts(r) == ["Shall I connect you?"]
    assert engine.slots["code"] == "4567"


def test_digits_by_dtmf_key_by_key_and_terminator(engine: FlowEngine) -> None:
    engine.respond(Dtmf("1"))
    for key in "12":
        r = engine.respond(Dtmf(key))
        assert r.parts() == [] and not r.done        # keep collecting silently
    assert engine.state()["dtmf"] == "12"
    r = engine.respond(Dtmf("34"))                    # max_digits reached
    assert texts(r) == ["Code 1 2 3 4. Right?"]


def test_digits_terminator_short_value_is_no_match(engine: FlowEngine) -> None:
    engine.respond(Dtmf("1"))
    r = engine.respond(Dtmf("12#"))
    assert texts(r)[0] == "Sorry, I didn't catch that."


def test_digits_mixed_dtmf_and_speech(engine: FlowEngine) -> None:
    engine.respond(Dtmf("1"))
    engine.respond(Dtmf("98"))
    r = engine.respond(Speech("seven six"))
    assert texts(r) == ["Code 9 8 7 6. Right?"]


def test_digits_no_input_takes_enough_buffered_keys(tmp_path: Path) -> None:
    flow = load_flow_text(tmp_path, '[flow]\nstart="a"\n[nodes.a]\nsay="Digits?"\n'
                          'input="digits"\nslot="d"\nmin_digits=2\nmax_digits=6\nnext="b"\n'
                          '[nodes.b]\nsay="Got {d}."\n')
    e = opened(flow)
    e.respond(Dtmf("123"))
    r = e.respond(NoInput())                         # inter-digit timeout
    assert texts(r) == ["Got 123."] and r.actions == (Hangup(),) and r.done


def test_confirmation_no_asks_again(engine: FlowEngine) -> None:
    engine.respond(Dtmf("1"))
    engine.respond(Speech("one two three four"))
    r = engine.respond(Speech("no that's wrong"))
    assert texts(r) == ["Your four digit code?"]
    assert engine.state()["phase"] == "ask"
    r = engine.respond(Dtmf("5678"))
    assert texts(r) == ["Code 5 6 7 8. Right?"]
    r = engine.respond(Speech("maybe"))               # neither yes nor no: confirm reprompt
    assert texts(r) == ["Sorry, I didn't catch that.", "Code 5 6 7 8. Right?"]
    engine.respond(Dtmf("1"))                         # DTMF 1 = yes
    assert engine.slots["code"] == "5678"


def test_free_text_slot(engine: FlowEngine) -> None:
    engine.respond(Speech("support"))
    r = engine.respond(Speech("Ada Lovelace"))
    assert engine.slots["name"] == "Ada Lovelace" and texts(r) == ["Shall I connect you?"]
    assert engine.listen is not None and engine.listen.grammar is not None


def test_text_node_rejects_dtmf_and_empty(engine: FlowEngine) -> None:
    engine.respond(Speech("support"))
    assert texts(engine.respond(Dtmf("5")))[0] == "Sorry, I didn't catch that."
    assert engine.state()["attempts"] == 1


def test_yes_no_both_ways_and_actions(engine: FlowEngine) -> None:
    engine.respond(Dtmf("1"))
    engine.respond(Speech("one two three four"))
    engine.respond(Speech("yeah"))
    state = engine.state()
    r = engine.respond(Speech("sure"))
    assert texts(r) == ["Connecting."]
    assert r.actions == (
        SetVar("code", "1234"),
        EmitEvent("connected", {"code": "1234", "who": "+15550001111"}),
        Webhook("http://127.0.0.1:9/hook", {"code": "1234"}, 300),
        Transfer("sip:agent@10.0.0.5"),
    )
    assert isinstance(r.actions[-1], Transfer) and r.actions[-1].kind == "uri"
    engine.restore(state)
    r = engine.respond(Dtmf("2"))
    assert texts(r) == ["Bye."] and r.actions == (Hangup("NORMAL_CLEARING"),)


def test_retries_exhausted_without_on_fail_says_goodbye(tmp_path: Path) -> None:
    flow = load_flow_text(tmp_path, '[flow]\nstart="q"\nretries=0\n[nodes.q]\nsay="Yes or no?"\n'
                          'input="yes_no"\nyes="q2"\nno="q2"\n[nodes.q2]\nsay="Ok."\n')
    e = opened(flow)
    r = e.respond(NoInput())
    assert texts(r) == ["Sorry, I could not help you this time. Goodbye."]
    assert r.actions == (Hangup("NORMAL_CLEARING"),) and e.listen is None


def test_proposal_is_speculative_and_stale_commit_raises(engine: FlowEngine) -> None:
    before = engine.state()
    partial = engine.propose(Speech("sal", final=False))
    final = engine.propose(Speech("sales"))
    assert engine.state() == before                   # proposing changed nothing
    assert [p.text for p in final.reply().prompts] == ["Your four digit code?"]
    final.commit()
    with pytest.raises(StaleProposal):
        partial.commit()
    partial.cancel()
    assert engine.node is not None and engine.node.id == "ask_code"


def test_state_is_json_and_restores_in_a_new_engine(engine: FlowEngine, flow_path: Path
                                                     ) -> None:
    engine.respond(Dtmf("1"))
    engine.respond(Dtmf("42"))
    saved = json.loads(json.dumps(engine.state()))
    other = FlowEngine(load_flow(flow_path), CallContext("uuid-1", caller="+15550001111"))
    other.restore(saved)
    assert texts(other.respond(Dtmf("42"))) == ["Code 4 2 4 2. Right?"]


@pytest.mark.parametrize("bad", [{}, {"kind": "flow"}, "node"])
def test_restore_rejects_foreign_state(engine: FlowEngine, bad: object) -> None:
    state = engine.state()
    if bad == "node":
        state["node"] = "nope"
        bad = state
    with pytest.raises(DialogError):
        engine.restore(bad)  # type: ignore[arg-type]


def test_grammar_and_static_prompts(flow_path: Path) -> None:
    flow = load_flow(flow_path)
    assert grammar(flow.nodes["menu"]) is None             # a regex-only intent
    assert grammar(flow.nodes["ask_name"]) is None
    assert "yes" in (grammar(flow.nodes["sure"]) or [])
    prompts = static_prompts(flow)
    assert "Welcome." in prompts and "Shall I connect you?" in prompts
    assert "Goodbye from the flow." in prompts
    assert not any("{" in p for p in prompts)


def test_reply_parts_round_trip_as_dicts(engine: FlowEngine) -> None:
    r = engine.respond(Speech("quit"))
    for part in [*r.parts(), Prompt("Hi", audio="/x.wav")]:
        data = json.loads(json.dumps(part_to_dict(part)))
        assert part_from_dict(data) == part
    with pytest.raises(DialogError):
        part_from_dict({"type": "explode"})


def test_flow_level_default_prompts(tmp_path: Path) -> None:
    flow = load_flow_text(tmp_path, '[flow]\nstart="q"\nno_match="Pardon?"\nno_input="Hello?"\n'
                          '[nodes.q]\nsay="Yes or no?"\ninput="yes_no"\nyes="q"\nno="q"\n')
    e = opened(flow)
    assert texts(e.respond(Speech("purple"))) == ["Pardon?", "Yes or no?"]
    assert texts(e.respond(NoInput())) == ["Hello?", "Yes or no?"]
    assert {"Pardon?", "Hello?"} <= set(static_prompts(flow))


def test_set_var_from_free_speech_is_one_line(tmp_path: Path) -> None:
    flow = load_flow_text(tmp_path, '[flow]\nstart="a"\n[nodes.a]\nsay="Name?"\ninput="text"\n'
                          'slot="n"\nnext="b"\n[nodes.b]\nsay="Ok."\n[[nodes.b.actions]]\n'
                          'type="set"\nname="who"\nvalue="{n}"\n[[nodes.b.actions]]\ntype="hangup"\n')
    e = opened(flow)
    r = e.respond(Speech("Bob\nevent plain ALL\r\n"))
    assert r.actions[0] == SetVar("who", "Bob event plain ALL")


def test_speculative_reply_can_be_reused_when_final_agrees(engine: FlowEngine) -> None:
    spec = engine.propose(Speech("support", final=False))
    same = engine.propose(Speech("support please"))
    other = engine.propose(Speech("sales"))
    assert spec.reply() == same.reply() == spec.reply()      # repeatable, compares by value
    assert spec.reply() != other.reply()
    same.commit()
    assert engine.node is not None and engine.node.id == "ask_name"


GLOBAL = flow_table("menu", {
    "menu": ask("Sales?", {"sales": goto_on(["sales"], "pin", dtmf="1")}, slot="choice"),
    "pin": {"say": "PIN?", "input": "digits", "slot": "pin", "max_digits": 4,
            "confirm": "PIN {pin:digits}?", "next": "agent"},
    "agent": then_transfer("Agent.", "7000"),
}, intents={"agent": goto_on(["agent", "operator"], "agent", dtmf="0")})


def test_global_intents(tmp_path: Path) -> None:
    flow = load_flow_text(tmp_path, GLOBAL, "g")
    e = opened(flow)
    start = e.state()
    assert e.listen is not None and set(e.listen.grammar or ()) == {"sales", "agent", "operator"}
    r = e.respond(Dtmf("0"))                               # global DTMF at an intent node
    assert r.actions == (Transfer("7000"),) and e.slots == {"choice": "agent"}
    e.restore(start)
    e.respond(Speech("sales"))
    assert e.listen is not None and "operator" in (e.listen.grammar or ())
    assert e.respond(Dtmf("0")).parts() == []             # at a digits node 0 is a digit
    r = e.respond(Speech("operator please"))               # speech escapes the digits node
    assert r.actions == (Transfer("7000"),)
    e.restore(start)
    e.respond(Speech("sales"))
    e.respond(Speech("one two three four"))
    assert e.listen is not None and "agent" in (e.listen.grammar or ())   # confirm phase
    assert e.respond(Speech("agent")).actions == (Transfer("7000"),)
