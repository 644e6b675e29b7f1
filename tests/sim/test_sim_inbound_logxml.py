"""Inbound ESL gaps closed in the emulator, over real loopback sockets: ``log``/``nolog`` with
``log/data`` frames, ``event xml`` (text/event-xml bodies) and ``userauth`` with the
directory's allowed events/API/log (PROTOCOL.md §1.3, §1.4, §2.1)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import unquote

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simwire import EslClient, Frame

from callctl.sim import eslcodec
from callctl.sim.eslconn import emit_log
from callctl.sim.inbound import EslUser, parse_userauth
from callctl.sim.switch import Switch, SwitchConfig


@pytest.fixture
def switch() -> Iterator[Switch]:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=8.0))
    sw.start()
    sw._server.directory.update({
        "1000@sim.local": EslUser("s3cret"),
        "ops@sim.local": EslUser("pw", allowed_events="BACKGROUND_JOB, HEARTBEAT",
                                 allowed_api="status version", allowed_log=False),
    })
    yield sw
    sw.stop()


def connect(sw: Switch, auth: str = "auth ClueCon") -> EslClient:
    cli = EslClient("127.0.0.1", sw.esl_port)
    cli.wait_frames(1)
    cli.send(auth + "\n\n")
    cli.wait_frames(2)
    return cli


def reply_text(fr: Frame) -> str:
    return dict(fr.headers).get("Reply-Text", "")


def send_and_wait(cli: EslClient, line: str) -> Frame:
    """Send one command; its reply is the next frame (no events/logs are queued meanwhile)."""
    n = len(cli.frames)
    cli.send(line + "\n\n")
    return cli.wait_frames(n + 1)[n]


def log_frames(cli: EslClient) -> list[Frame]:
    return [f for f in cli.frames if f.ctype == "log/data"]


def test_log_data_frames_levels_and_nolog(switch: Switch) -> None:
    info = connect(switch)
    quiet = connect(switch)
    assert reply_text(send_and_wait(info, "log info")) == "+OK log level info [6]"
    emit_log(switch, 7, "too verbose for info\n", file="switch_core.c", func="f", line=1)
    emit_log(switch, 5, "New Channel sofia/x [abc]\n", file="switch_core_state_machine.c",
             func="switch_core_session_run", line=624, session_uuid="abc")
    emit_log(switch, 3, "Socket Error!\n", file="mod_event_socket.c", func="socket_function",
             line=3)
    with gevent.Timeout(5):
        while len(log_frames(info)) < 2:
            gevent.sleep(0.005)
    first, second = log_frames(info)
    assert [k for k, _ in first.headers] == ["Content-Type", "Content-Length", "Log-Level",
                                             "Text-Channel", "Log-File", "Log-Func",
                                             "Log-Line", "User-Data"]
    assert first.headers[2:] == [("Log-Level", "5"), ("Text-Channel", "3"),
                                 ("Log-File", "switch_core_state_machine.c"),
                                 ("Log-Func", "switch_core_session_run"), ("Log-Line", "624"),
                                 ("User-Data", "abc")]
    text = first.body.decode()
    assert text.endswith(" [NOTICE] switch_core_state_machine.c:624 New Channel sofia/x [abc]\n")
    assert int(dict(first.headers)["Content-Length"]) == len(first.body)
    assert dict(second.headers)["Text-Channel"] == "0"
    assert dict(second.headers)["User-Data"] == ""       # emitted as an empty value
    assert b"User-Data: \n\n" in info.raw
    gevent.sleep(0.05)
    assert log_frames(quiet) == []                        # never asked for logs
    assert len(log_frames(info)) == 2                     # the DEBUG line was filtered out
    assert reply_text(send_and_wait(info, "nolog")) == "+OK no longer logging"
    emit_log(switch, 0, "after nolog\n", file="a.c", func="f", line=1)
    gevent.sleep(0.05)
    assert len(log_frames(info)) == 2
    assert reply_text(send_and_wait(info, "nolog")) == "-ERR not loging"


def test_nolog_drops_lines_not_yet_written() -> None:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.2))
    sw.start()
    try:
        cli = connect(sw)
        assert reply_text(send_and_wait(cli, "log")) == "+OK log level debug [7]"
        emit_log(sw, 7, "queued\n", file="a.c", func="f", line=1)
        assert reply_text(send_and_wait(cli, "nolog")) == "+OK no longer logging"
        gevent.sleep(0.4)
        assert log_frames(cli) == []
    finally:
        sw.stop()


def test_event_xml_frames(switch: Switch) -> None:
    xml_cli = connect(switch)
    plain_cli = connect(switch)
    assert reply_text(send_and_wait(xml_cli, "event xml BACKGROUND_JOB")) == \
        "+OK event listener enabled xml"
    assert reply_text(send_and_wait(plain_cli, "event plain BACKGROUND_JOB")) == \
        "+OK event listener enabled plain"
    job = send_and_wait(xml_cli, "bgapi version")
    assert reply_text(job).startswith("+OK Job-UUID: ")
    fr = xml_cli.wait_for(lambda f: f.ctype == "text/event-xml")
    plain = plain_cli.wait_for(lambda f: f.name == "BACKGROUND_JOB")
    assert fr.headers[0][0] == "Content-Length" and int(fr.headers[0][1]) == len(fr.body)
    text = fr.body.decode()
    assert text.startswith("<event>\n  <headers>\n    <Event-Name>BACKGROUND_JOB</Event-Name>\n")
    assert text.endswith("</body>\n</event>\n")
    root = ET.fromstring(fr.body)
    headers = [(h.tag, unquote(h.text or "")) for h in root.find("headers") or []]
    assert [k for k, _ in headers] == [k for k, _ in plain.ev_headers if k != "Content-Length"]
    assert dict(headers)["Job-UUID"] == reply_text(job).removeprefix("+OK Job-UUID: ")
    assert dict(headers)["Event-Date-GMT"].count(" ") >= 4        # values URL-encoded on wire
    assert "%20" in text
    body = root.findtext("body") or ""
    assert plain.ev_body is not None and plain.ev_body.endswith(b"\n")
    assert body == plain.ev_body.decode() + "  "          # "</body>" indented after a newline
    assert root.findtext("Content-Length") == str(len(plain.ev_body))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True),
                          st.text(alphabet=st.characters(blacklist_categories=["Cs"]),
                                  min_size=1, max_size=30)), min_size=1, max_size=6),
       st.one_of(st.none(), st.text(alphabet=st.characters(
           blacklist_categories=["Cs", "Cc"]), max_size=60)))
def test_xml_serializer_is_wellformed_and_round_trips(headers: list[tuple[str, str]],
                                                      body: str | None) -> None:
    if body is not None and "<!" in body:
        body = body.replace("<!", "< !")      # FreeSWITCH passes "<!…" through unescaped
    data = eslcodec.serialize_xml(headers, body)
    root = ET.fromstring(data)
    got = [(h.tag, unquote(h.text or "")) for h in root.find("headers") or []]
    assert got == headers
    if body:
        assert (root.findtext("body") or "").rstrip(" ") == body.rstrip(" ")
        assert root.findtext("Content-Length") == str(len(body.encode()))
    else:
        assert root.find("body") is None


def test_userauth_extended_reply_and_restrictions(switch: Switch) -> None:
    full = connect(switch, "userauth 1000@sim.local:s3cret")
    assert b"Content-Type: command/reply\nReply-Text: +OK accepted\nAllowed-Events: all\n" \
           b"Allowed-API: all\nAllowed-LOG: true\n\n" in full.raw
    assert reply_text(send_and_wait(full, "log notice")) == "+OK log level notice [5]"
    assert send_and_wait(full, "api uptime").ctype == "api/response"

    ops = connect(switch, "userauth ops@sim.local:pw")
    assert ops.frames[1].headers[1:] == [("Reply-Text", "+OK accepted"),
                                         ("Allowed-Events", "BACKGROUND_JOB, HEARTBEAT"),
                                         ("Allowed-API", "status version"),
                                         ("Allowed-LOG", "false")]
    assert send_and_wait(ops, "api status").body.startswith(b"UP ")
    assert reply_text(send_and_wait(ops, "api uptime")) == "-ERR permission denied"
    assert reply_text(send_and_wait(ops, "bgapi uptime")) == "-ERR permission denied"
    assert reply_text(send_and_wait(ops, "log debug")) == "-ERR permission denied"
    assert reply_text(send_and_wait(ops, "event plain CHANNEL_ANSWER")) == \
        "-ERR no keywords supplied"                       # not allowed: silently skipped
    assert reply_text(send_and_wait(ops, "event plain CHANNEL_ANSWER BACKGROUND_JOB")) == \
        "+OK event listener enabled plain"
    call = switch.place_call("park")
    assert call.wait_answered(5)
    assert reply_text(send_and_wait(ops, "bgapi version")).startswith("+OK Job-UUID: ")
    ops.wait_for(lambda f: f.name == "BACKGROUND_JOB")
    assert [f.name for f in ops.frames if f.is_event] == ["BACKGROUND_JOB"]


@pytest.mark.parametrize("line", ["userauth 1000@sim.local:wrong", "userauth 1000@sim.local",
                                  "userauth nobody@sim.local:s3cret", "userauth @sim.local:x",
                                  "userauth 1000:s3cret"])
def test_userauth_refused_disconnects(switch: Switch, line: str) -> None:
    cli = connect(switch, line)
    assert cli.wait_eof()
    assert reply_text(cli.frames[1]) == "-ERR invalid"
    assert cli.frames[2].ctype == "text/disconnect-notice"


def test_userauth_user_colon_password_form(switch: Switch) -> None:
    assert parse_userauth("1000:s3cret@sim.local") == ("1000", "sim.local", "s3cret")
    assert parse_userauth("1000@sim.local:a:b") == ("1000", "sim.local", "a:b")
    cli = connect(switch, "userauth 1000:s3cret@sim.local")
    assert reply_text(cli.frames[1]) == "+OK accepted"


@given(st.text(max_size=40))
def test_parse_userauth_never_raises(arg: str) -> None:
    got = parse_userauth(arg)
    assert got is None or (got[0] and got[1])
