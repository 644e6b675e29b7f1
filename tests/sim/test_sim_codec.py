"""The emulator's ESL codec: FreeSWITCH's URL-encoding and frame layouts, and the client
command parser fed whole, one byte at a time, and with trailing data."""

from __future__ import annotations

import json

import pytest

from callctl.sim import eslcodec
from callctl.sim.eslcodec import Command, CommandParser, ESLCommandError


@pytest.mark.parametrize("raw,encoded", [
    ("::1", "%3A%3A1"),
    ("Tue, 07 Jul 2015 14:53:14 GMT", "Tue,%2007%20Jul%202015%2014%3A53%3A14%20GMT"),
    ("sofia/lo/sipp@127.0.0.1:5070", "sofia/lo/sipp%40127.0.0.1%3A5070"),
    ("+OK\n", "%2BOK%0A"),
    ("tone_stream://%(400,200,440);loops=3", "tone_stream%3A//%25(400,200,440)%3Bloops%3D3"),
    ("FILE PLAYED", "FILE%20PLAYED"),
    ("a%2Fb", "a%2Fb"),              # already encoded (uppercase hex): kept
    ("a%2fb", "a%252fb"),            # lowercase hex is not an escape for FreeSWITCH
    ("100%", "100%25"),
    ("v=0\r\n", "v%3D0%0D%0A"),
    ("é", "%C3%A9"),                 # every UTF-8 byte
    ("!$'()*,-./_~", "!$'()*,-./_~"),
    ('#&<>?[\\]^`{|}"', "%23%26%3C%3E%3F%5B%5C%5D%5E%60%7B%7C%7D%22"),
])
def test_url_encode_like_switch_url_encode(raw: str, encoded: str) -> None:
    assert eslcodec.url_encode(raw) == encoded


def test_reply_and_api_frames() -> None:
    assert eslcodec.auth_request() == b"Content-Type: auth/request\n\n"
    assert eslcodec.command_reply("+OK accepted") == \
        b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    assert eslcodec.command_reply("+OK Job-UUID: x", (("Job-UUID", "x"),)) == \
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: x\nJob-UUID: x\n\n"
    assert eslcodec.api_response("é\n") == \
        b"Content-Type: api/response\nContent-Length: 3\n\n\xc3\xa9\n"
    assert eslcodec.api_response("").endswith(b"Content-Length: 14\n\n-ERR no reply\n")


def test_event_plain_layout_with_and_without_body() -> None:
    frame = eslcodec.event_plain([("Event-Name", "API"), ("A", "x y")])
    assert frame == b"Content-Length: 26\nContent-Type: text/event-plain\n\n" \
                    b"Event-Name: API\nA: x%20y\n\n"
    with_body = eslcodec.event_plain([("Event-Name", "CUSTOM")], '{"t":"é"}')
    inner = b'Event-Name: CUSTOM\nContent-Length: 10\n\n{"t":"\xc3\xa9"}'
    assert with_body == b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(inner) \
        + inner


def test_event_json_keeps_duplicates_and_strings() -> None:
    frame = eslcodec.event_json([("Hangup-Cause", "A"), ("X", "a:b"), ("Hangup-Cause", "A")],
                                "body")
    head, _, data = frame.partition(b"\n\n")
    assert head.startswith(b"Content-Length: %d\n" % len(data))
    assert data == b'{"Hangup-Cause":"A","X":"a:b","Hangup-Cause":"A",' \
                   b'"Content-Length":"4","_body":"body"}'
    assert json.loads(data)["X"] == "a:b"


def test_notices() -> None:
    assert eslcodec.disconnect_notice() == (
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n"
        b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n")
    assert eslcodec.disconnect_notice("u").startswith(
        b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: u\n"
        b"Content-Disposition: disconnect\nContent-Length: 67\n\n")
    assert eslcodec.linger_notice("u", "sofia/x/a@b:1", None) == (
        b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: u\n"
        b"Content-Disposition: linger\nChannel-Name: sofia/x/a@b:1\nLinger-Time: -1\n"
        b"Content-Length: 0\n\n")
    assert eslcodec.rude_rejection() == \
        b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
    reply = eslcodec.connect_reply([("Event-Name", "CHANNEL_DATA")])
    assert reply.endswith(b"Content-Type: command/reply\nReply-Text: %2BOK%0A\n"
                          b"Socket-Mode: async\nControl: full\n\n")


SENDMSG = (b"sendmsg abc\ncall-command: execute\nexecute-app-name: playback\n"
           b"content-type: text/plain\ncontent-length: 5\n\n/a b\n")
STREAM = b"\n\r\nauth ClueCon\n\n" + SENDMSG + b"api status\r\n\r\nexit\n\n"


def _all(parser: CommandParser) -> list[Command]:
    out = []
    while (cmd := parser.next_command()) is not None:
        out.append(cmd)
    return out


def _check(cmds: list[Command]) -> None:
    assert [c.line for c in cmds] == ["auth ClueCon", "sendmsg abc", "api status", "exit"]
    send = cmds[1]
    assert send.header("Call-Command") == "execute"
    assert send.header("execute-app-name") == "playback"
    assert send.body == b"/a b\n"
    assert send.raw.startswith("sendmsg abc\ncall-command: execute\n")


def test_parser_whole_stream() -> None:
    p = CommandParser()
    p.receive_data(STREAM)
    _check(_all(p))
    assert p.buffered == 0


def test_parser_one_byte_at_a_time() -> None:
    p = CommandParser()
    cmds: list[Command] = []
    for i in range(len(STREAM)):
        p.receive_data(STREAM[i:i + 1])
        cmds += _all(p)
    _check(cmds)


def test_parser_trailing_partial_frame_waits() -> None:
    p = CommandParser()
    p.receive_data(STREAM + b"api uuid_kill 1")
    _check(_all(p))
    assert p.buffered == len(b"api uuid_kill 1")
    p.receive_data(b"\n\n")
    assert p.next_command() == Command("api uuid_kill 1", (), b"", "api uuid_kill 1\n\n")


def test_parser_lines_without_colon_are_ignored() -> None:
    p = CommandParser()
    p.receive_data(b"sendmsg\nnonsense\ncall-command:hangup\n\n")
    cmd = p.next_command()
    assert cmd is not None and cmd.headers == (("call-command", "hangup"),)


@pytest.mark.parametrize("frame,rule", [
    (b"api x\nContent-Length: 99999999999\n\n", "out of range"),
    (b"api x\nContent-Length: -1\n\n", "out of range"),
    (b"api x\nContent-Length: ten\n\n", "not a number"),
])
def test_parser_rejects_bad_content_length(frame: bytes, rule: str) -> None:
    p = CommandParser()
    p.receive_data(frame)
    with pytest.raises(ESLCommandError, match=rule) as info:
        p.next_command()
    assert info.value.data.startswith(b"api x")
    with pytest.raises(ESLCommandError):      # stays broken
        p.next_command()


def test_parser_rejects_oversized_header_block() -> None:
    p = CommandParser(max_header_bytes=64)
    p.receive_data(b"x" * 65)
    with pytest.raises(ESLCommandError, match="too long"):
        p.next_command()
