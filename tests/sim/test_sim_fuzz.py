"""Fuzz the emulator's ESL command parser (only "parsed" or ``ESLCommandError``), and show the
inbound server survives garbage, half frames, huge Content-Length and a client vanishing in
the middle of a command (real sockets), logging what went wrong."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest
from gevent import socket
from hypothesis import given, settings
from hypothesis import strategies as st
from simwire import EslClient

from callctl.sim.eslcodec import CommandParser, ESLCommandError
from callctl.sim.switch import Switch, SwitchConfig

TOKENS = [b"\n", b"\r", b"\n\n", b"api status", b"Content-Length: ", b"content-length: 3",
          b"sendmsg", b": ", b"-1", b"99999999999", b"abc", b"\xff\xfe", b"auth ClueCon"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(TOKENS)), max_size=30),
       st.integers(min_value=1, max_value=50))
def test_parser_only_parses_or_raises_its_own_error(parts: list[bytes], chunk: int) -> None:
    data = b"".join(parts)
    p = CommandParser(max_header_bytes=512, max_content_length=64)
    try:
        for i in range(0, len(data), chunk):
            p.receive_data(data[i:i + chunk])
            while (cmd := p.next_command()) is not None:
                assert isinstance(cmd.line, str) and isinstance(cmd.body, bytes)
                assert len(cmd.body) <= 64
    except ESLCommandError as exc:
        assert exc.rule


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["api", "bgapi", "sendmsg", "event", "filter"]),
                          st.text(alphabet=st.characters(blacklist_categories=["Cs"],
                                                        blacklist_characters="\r\n"),
                                  max_size=20)), min_size=1, max_size=5))
def test_parser_roundtrip_of_wellformed_commands(cmds: list[tuple[str, str]]) -> None:
    data = b"".join(f"{c} {a}\n\n".encode() for c, a in cmds)
    p = CommandParser()
    p.receive_data(data)
    got = []
    while (cmd := p.next_command()) is not None:
        got.append(cmd.line)
    assert got == [f"{c} {a}" for c, a in cmds]


@pytest.fixture
def switch() -> Iterator[Switch]:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=8.0))
    sw.start()
    yield sw
    sw.stop()


def _still_serving(sw: Switch) -> None:
    cli = EslClient("127.0.0.1", sw.esl_port)
    cli.wait_frames(1)
    assert cli.command("auth ClueCon").headers[1][1] == "+OK accepted"
    assert cli.command("api version").body.startswith(b"FreeSWITCH Version 1.10.12")
    cli.close()


def test_server_survives_garbage(switch: Switch, capsys: pytest.CaptureFixture[str]) -> None:
    cli = EslClient("127.0.0.1", switch.esl_port)
    cli.wait_frames(1)
    cli.send(b"\x00\xff garbage \xfe\n\n\x01\x02\n\n")
    cli.wait_frames(3)
    assert cli.command("auth ClueCon").headers[1][1] == "+OK accepted"   # still talking
    replies = [f for f in cli.frames if f.ctype == "command/reply"]
    assert [dict(f.headers)["Reply-Text"] for f in replies][:2] == \
        ["-ERR command not found", "-ERR command not found"]
    _still_serving(switch)


def test_server_survives_huge_content_length(switch: Switch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cli = EslClient("127.0.0.1", switch.esl_port)
    cli.wait_frames(1)
    cli.send("auth ClueCon\n\napi status\nContent-Length: 99999999999\n\n")
    assert cli.wait_eof()
    assert cli.frames[-1].ctype == "text/disconnect-notice"
    assert "sim.esl_bad_frame" in capsys.readouterr().out
    _still_serving(switch)


def test_server_survives_half_frames_and_disconnect_mid_command(
        switch: Switch, capsys: pytest.CaptureFixture[str]) -> None:
    for payload in (b"auth ClueCon\n\napi sta", b"auth Clue", b"api status\nContent-Length: 10"
                    b"\n\nabc"):
        s = socket.create_connection(("127.0.0.1", switch.esl_port))
        s.recv(100)
        s.sendall(payload)
        gevent.sleep(0.02)
        s.close()
    gevent.sleep(0.05)
    assert "sim.esl_eof_mid_command" in capsys.readouterr().out
    _still_serving(switch)
    # a half frame completed later is one command
    cli = EslClient("127.0.0.1", switch.esl_port)
    cli.wait_frames(1)
    for ch in b"auth ClueCon\n\napi version\n\n":
        cli.send(bytes([ch]))
    cli.wait_frames(3)
    assert cli.frames[2].body.startswith(b"FreeSWITCH Version")


def test_call_survives_a_broken_listener(switch: Switch) -> None:
    """A listener that dies mid-call ends only itself: the call and other listeners go on."""
    bad = EslClient("127.0.0.1", switch.esl_port)
    bad.wait_frames(1)
    bad.command("auth ClueCon")
    bad.command("event plain ALL")
    good = EslClient("127.0.0.1", switch.esl_port)
    good.wait_frames(1)
    good.command("auth ClueCon")
    good.command("event plain CHANNEL_HANGUP_COMPLETE")
    call = switch.place_call("park")
    assert call.wait_answered(5)
    bad.send(b"api x\nContent-Length: zz\n\n")
    assert bad.wait_eof()
    call.hangup()
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    good.wait_for(lambda f: f.name == "CHANNEL_HANGUP_COMPLETE")
