"""Flow validation: every problem is one line with the file and the line of the culprit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from callctl import config
from callctl.cli import cli_main
from callctl.dialog import Dialogs
from callctl.dialog.base import (
    CallContext,
    Dtmf,
    EmitEvent,
    Hangup,
    NoInput,
    SetVar,
    Speech,
    Transfer,
)
from callctl.dialog.flows import (
    FlowEngine,
    FlowError,
    check_config,
    check_flow,
    flows_dir,
    load_flow,
    static_prompts,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "callctl" / "examples"

BASE = """[flow]
start = "a"

[nodes.a]
say = "Hello."
input = "intent"

[nodes.a.intents.x]
phrases = ["x"]
goto = "b"

[nodes.b]
say = "Bye."
"""


def problems_for(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "f.toml"
    p.write_text(text)
    flow, problems = check_flow(p)
    assert (flow is None) == bool(problems)
    return problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, t in enumerate(text.splitlines(), 1) if needle in t)


def test_base_flow_is_valid(tmp_path: Path) -> None:
    assert problems_for(tmp_path, BASE) == []


@pytest.mark.parametrize(("edit", "needle", "message"), [
    (lambda t: t.replace('goto = "b"', 'goto = "nowhere"'), 'goto = "nowhere"',
     "goto unknown node 'nowhere'"),
    (lambda t: t + '\n[nodes.orphan]\nsay = "Never."\n', "[nodes.orphan]",
     "node orphan: unreachable"),
    (lambda t: t.replace('phrases = ["x"]', 'regex = "(unclosed"'), 'regex = "(unclosed"',
     "bad regex"),
    (lambda t: t.replace('say = "Bye."', 'say = "Bye."\naudio = "missing.wav"'),
     'audio = "missing.wav"', "missing prompt file"),
    (lambda t: t.replace('start = "a"', 'start = "zz"'), 'start = "zz"',
     "start node 'zz' is not defined"),
    (lambda t: t.replace('input = "intent"', 'input = "intent"\nretires = 3'), "retires = 3",
     "unknown key 'retires'"),
    (lambda t: t.replace('input = "intent"', 'input = "telepathy"'), 'input = "telepathy"',
     "input 'telepathy' unknown"),
    (lambda t: t + '[[nodes.b.actions]]\ntype = "teleport"\n', 'type = "teleport"',
     "action type 'teleport' unknown"),
    (lambda t: t + '[[nodes.b.actions]]\ntype = "transfer"\ndest = "has space"\n',
     'dest = "has space"', "not an extension"),
    (lambda t: t + '[[nodes.b.actions]]\ntype = "webhook"\nurl = "ftp://x"\n',
     'url = "ftp://x"', "must be http"),
    (lambda t: t + '[[nodes.b.actions]]\ntype = "set"\n', 'type = "set"',
     "set action: missing 'name'"),
    (lambda t: t.replace('say = "Bye."', 'say = "Bye."\nnext = "c"') +
     '[nodes.c]\nsay = "C."\nnext = "b"\n', 'next = "c"', "loop of nodes without input"),
    (lambda t: t.replace('start = "a"', 'start = "a"\ngoodbye = "Bye {caller}"'),
     "goodbye =", "goodbye must be a string without {placeholders}"),
    (lambda t: t.replace('start = "a"', 'start = "a"\n[flow.intents.help]\n'
                         'phrases = ["help"]\ngoto = "lost"'), 'goto = "lost"',
     "intent help: goto unknown node 'lost'"),
    (lambda t: t.replace("[nodes.a.intents.x]", "[nodes.a.intents.x]\ndtmf = \"12\""),
     'dtmf = "12"', "dtmf must be one key"),
    (lambda t: t + '[nodes.d]\nsay = "D?"\ninput = "digits"\nslot = "d"\nmin_digits = 5\n'
     'max_digits = 2\nnext = "b"\n', "min_digits = 5", "min_digits <= max_digits"),
])
def test_each_problem_has_file_and_line(tmp_path: Path, edit: Callable[[str], str],
                                        needle: str, message: str) -> None:
    text = edit(BASE)
    problems = problems_for(tmp_path, text)
    hits = [p for p in problems if message in p]
    assert hits, problems
    assert hits[0].startswith(f"{tmp_path / 'f.toml'}:{line_of(text, needle)}: "), hits[0]


def test_yes_no_digits_text_requirements(tmp_path: Path) -> None:
    text = BASE + ('[nodes.y]\nsay = "?"\ninput = "yes_no"\nyes = "b"\n'
                   '[nodes.t]\nsay = "Name?"\ninput = "text"\n')
    problems = "\n".join(problems_for(tmp_path, text))
    assert "yes_no node needs both yes and no" in problems
    assert "text node needs next" in problems and "text node needs slot" in problems


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, BASE + "\n[nodes.c\nsay = 1\n")
    assert len(problems) == 1 and "not valid TOML" in problems[0]
    assert problems[0].startswith(f"{tmp_path / 'f.toml'}:15: ")


def test_unreadable_file(tmp_path: Path) -> None:
    _, problems = check_flow(tmp_path / "absent.toml")
    assert problems and ":1: cannot read flow file" in problems[0]


def test_load_flow_raises_with_all_problems(tmp_path: Path) -> None:
    p = tmp_path / "f.toml"
    p.write_text(BASE.replace('goto = "b"', 'goto = "nowhere"'))
    with pytest.raises(FlowError) as e:
        load_flow(p)
    assert len(e.value.problems) == 2            # unknown node + b unreachable
    assert "(and 1 more)" in str(e.value)


def test_audio_prompt_resolves_relative_to_flow(tmp_path: Path) -> None:
    (tmp_path / "hi.wav").write_bytes(b"RIFF")
    p = tmp_path / "f.toml"
    p.write_text(BASE.replace('say = "Bye."', 'say = "Bye."\naudio = "hi.wav"'))
    flow = load_flow(p)
    prompt = flow.nodes["b"].say[0]
    assert prompt.audio == str(tmp_path / "hi.wav") and prompt.text == "Bye."
    assert "Bye." not in static_prompts(flow)    # played from the file, not synthesized


@pytest.mark.parametrize("name", ["front_desk", "appointment", "account"])
def test_example_flows_are_valid(name: str) -> None:
    flow, problems = check_flow(EXAMPLES / "flows" / f"{name}.toml")
    assert problems == [] and flow is not None
    assert static_prompts(flow)


def test_example_config_with_examples_dir(tmp_path: Path) -> None:
    cfg = config.load(EXAMPLES / "callctl.toml", env={})
    # The shipped config's relative flows_dir resolves beside it: every route's flow exists.
    assert check_config(cfg, EXAMPLES / "callctl.toml") == []
    # Copied elsewhere without its flows, each missing flow is reported with its line.
    moved = tmp_path / "callctl.toml"
    moved.write_text((EXAMPLES / "callctl.toml").read_text())
    missing = check_config(config.load(moved, env={}), moved)
    assert len(missing) == 3
    assert missing[0].startswith(f"{moved}:")
    assert f"routes[0].flow: flow file {tmp_path / 'flows' / 'front_desk.toml'} not found" \
        in missing[0]
    dialogs = Dialogs(cfg, EXAMPLES / "callctl.toml", directory=EXAMPLES / "flows")
    assert set(dialogs.flows) == {"front_desk", "appointment", "account"}
    route = cfg.route_for("+15551230000")
    assert route is not None
    engine = dialogs.engine(route, CallContext("u", did=route.did))
    engine.open()
    reply = engine.respond(Speech("technical support please"))
    assert reply.actions[-1] == Transfer("7002")
    assert "Connecting you to billing." in dialogs.static_prompts()


def test_relative_flows_dir_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                    ) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "main.toml").write_text(BASE)
    conf = tmp_path / "callctl.toml"
    conf.write_text('[dialog]\nflows_dir = "flows"\n\n[[routes]]\ndid = "100"\nflow = "main"\n'
                    '\n[[routes]]\ndid = "200"\nflow = "gone"\n')
    assert flows_dir("flows", conf) == tmp_path / "flows"
    assert cli_main(["check-config", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    line = line_of(conf.read_text(), 'flow = "gone"')
    gone = tmp_path / "flows" / "gone.toml"
    assert f"{conf}:{line}: routes[1].flow: flow file {gone} not found" in err
    conf.write_text(conf.read_text().replace('flow = "gone"', 'flow = "main"'))
    assert cli_main(["check-config", "--config", str(conf)]) == 0


def test_llm_route_needs_url(tmp_path: Path) -> None:
    cfg = config.from_mapping({"routes": [{"did": "1", "flow": "llm"}]}, env={})
    assert "needs dialog.llm_url" in check_config(cfg)[0]
    cfg = config.from_mapping({"dialog": {"llm_url": "http://127.0.0.1:1"},
                               "routes": [{"did": "1", "flow": "llm"}]}, env={})
    assert check_config(cfg) == []


def example(name: str) -> FlowEngine:
    e = FlowEngine(load_flow(EXAMPLES / "flows" / f"{name}.toml"),
                   CallContext("u", caller="+15550001111"))
    e.open()
    return e


def test_example_account_by_dtmf_with_fallback_prompt() -> None:
    e = example("account")
    r = e.respond(Speech("um I don't know"))                   # no digits heard
    assert "keypad" in r.sentences[-1]
    for key in "1234":
        e.respond(Dtmf(key))
    r = e.respond(Dtmf("5678#"))
    assert r.sentences == ["I heard 1 2 3 4 5 6 7 8. Is that correct?"]
    r = e.respond(Dtmf("1"))
    assert r.actions[-1] == Transfer("queue:accounts")
    assert SetVar("callctl_account", "12345678") in r.actions


def test_example_account_agent_anytime() -> None:
    e = example("account")
    assert e.respond(Speech("can I talk to a person")).actions == (Transfer("7000"),)


def test_example_appointment_reprompt_then_yes() -> None:
    e = example("appointment")
    r = e.respond(Speech("what?"))
    assert r.sentences[0] == "Sorry, I need a yes or a no." and "press 1" in r.sentences[1]
    r = e.respond(Speech("yep"))
    assert r.actions == (EmitEvent("appointment.confirmed", {"caller": "+15550001111"}),
                         Hangup("NORMAL_CLEARING"))


def test_example_appointment_silence_ends_with_callback() -> None:
    e = example("appointment")
    for _ in range(2):
        assert not e.respond(NoInput()).done
    r = e.respond(NoInput())
    assert r.sentences == ["I'll ask the clinic to call you back. Goodbye."] and r.done


def test_example_front_desk_dtmf_and_goodbye() -> None:
    e = example("front_desk")
    state = e.state()
    assert e.respond(Dtmf("1")).actions[-1] == Transfer("7001")
    e.restore(state)
    r = e.respond(Speech("no thanks that's all"))
    assert r.sentences == ["Thank you for calling Acme. Goodbye."] and r.done
