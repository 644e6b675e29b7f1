"""The greenswitch adapter: I/O-free framing against real FreeSWITCH captures, and the fixed
greenswitch connection over real loopback sockets (timeouts, garbage, bodies, plain only)."""

from __future__ import annotations

import json
import random
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callctl.esl.adapter import (
    EslDisconnected,
    EslEvent,
    EslProtocolError,
    EslTimeout,
    EslUsageError,
    FrameReader,
    InboundConnection,
    OutboundConnection,
    OutboundListener,
    frame_to_event,
    parse_event_plain,
)
from callctl.metrics import Metrics

STREAMS = ["01_park_api_events", "02_caller_bye_events", "03_socket_events",
           "03_socket_outbound_socket", "04_audiofork_events", "05_audiofork_stereo_events",
           "06_socket_nolinger_events", "06_socket_nolinger_outbound_socket",
           "07_audiofork_drachtio_events", "08_sndfile_events"]


def split_frames(data: bytes) -> list[bytes]:
    """Independent reference splitter (regex, not the code under test)."""
    out, i = [], 0
    while i < len(data):
        j = data.index(b"\n\n", i)
        m = re.search(rb"^Content-Length: (\d+)$", data[i:j], re.M)
        n = int(m.group(1)) if m else 0
        out.append(data[i:j + 2 + n])
        i = j + 2 + n
    return out


def read_all(reader: FrameReader, chunks: Iterator[bytes]) -> list[Any]:
    frames = []
    for c in chunks:
        reader.receive_data(c)
        while (f := reader.next_frame()) is not None:
            frames.append(f)
    return frames


def chunked(data: bytes, sizes: Callable[[], int]) -> Iterator[bytes]:
    i = 0
    while i < len(data):
        n = sizes()
        yield data[i:i + n]
        i += n


@pytest.mark.parametrize("name", STREAMS)
def test_captures_frame_whole_bytewise_and_random(fixtures_dir: Path, name: str) -> None:
    data = (fixtures_dir / f"{name}_recv_stream.txt").read_bytes()
    want = split_frames(data)
    whole = read_all(FrameReader(), iter([data]))
    assert len(whole) == len(want)
    rnd = random.Random(name)
    for frames in (read_all(FrameReader(), chunked(data, lambda: rnd.randint(1, 700))),
                   read_all(FrameReader(), chunked(data, lambda: 1)) if len(data) < 300_000
                   else whole):
        assert [(f.headers, f.body) for f in frames] == [(f.headers, f.body) for f in whole]
    for f in whole:
        ev = frame_to_event(f)
        if f.headers["Content-Type"] == "text/event-plain":
            assert ev.headers["Event-Name"]


def test_custom_audio_fork_bodies_survive(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "04_audiofork_events_recv_stream.txt").read_bytes()
    events = [frame_to_event(f) for f in read_all(FrameReader(), iter([data]))
              if f.headers["Content-Type"] == "text/event-plain"]
    custom = [e for e in events if e.headers.get("Event-Name") == "CUSTOM"]
    assert {e.name for e in custom} >= {"mod_audio_fork::connect",
                                        "mod_audio_fork::transcription"}
    bodies = [e for e in custom if e.body]
    assert bodies
    for e in bodies:
        json.loads(e.body)   # a real JSON body, not glued onto Content-Length
        assert "\n" not in e.headers["Content-Length"]


def test_body_with_colon_space_and_percent_is_kept_verbatim() -> None:
    body = b'{"text":"a: b %41 c","x":"\\n"}'
    raw = (b"Event-Subclass: mod_audio_fork%3A%3Atranscription\nEvent-Name: CUSTOM\n"
           b"Unique-ID: u1\nContent-Length: " + str(len(body)).encode() + b"\n\n" + body)
    ev = parse_event_plain(raw)
    assert ev.name == "mod_audio_fork::transcription"
    assert ev.body == body.decode()
    assert "text" not in ev.headers and ev.uuid == "u1"


def test_utf8_header_decoding_and_multibyte_body() -> None:
    body = "안녕하세요: 네".encode()
    raw = (b"Event-Name: CUSTOM\nEvent-Subclass: x\nCaller-Caller-ID-Name: %ED%99%8D\n"
           b"Content-Length: " + str(len(body)).encode() + b"\n\n" + body)
    ev = parse_event_plain(raw)
    assert ev.headers["Caller-Caller-ID-Name"] == "홍" and ev.body == "안녕하세요: 네"


@pytest.mark.parametrize("raw,rule", [
    (b"Content-Type: command/reply\nbad line\n\n", "Name: value"),
    (b"Content-Type: api/response\nContent-Length: -3\n\n", "Content-Length"),
    (b"Content-Type: api/response\nContent-Length: 99999999999\n\n", "Content-Length"),
    (b"Reply-Text: +OK\n\n", "without Content-Type"),
    (b"Content-Type: command/reply\nReply-Text: \xff\xfe\n\n", "UTF-8"),
    (b"Content-Type: command/reply\nReply-Text: %FF\n\n", "UTF-8"),
])
def test_garbage_frames_raise_protocol_error(raw: bytes, rule: str) -> None:
    r = FrameReader()
    r.receive_data(raw)
    with pytest.raises(EslProtocolError) as e:
        r.next_frame()
    assert rule in str(e.value)


def test_json_events_are_refused(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "09_caller_bye_json_events_recv_stream.txt").read_bytes()
    frames = read_all(FrameReader(), iter([data]))
    json_frames = [f for f in frames if f.headers["Content-Type"] == "text/event-json"]
    assert json_frames
    with pytest.raises(EslProtocolError, match="plain events only"):
        frame_to_event(json_frames[0])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_fuzz_frame_reader(data: bytes, step: int) -> None:
    r = FrameReader()
    try:
        for i in range(0, len(data), step):
            r.receive_data(data[i:i + step])
            while (f := r.next_frame()) is not None:
                frame_to_event(f)
    except EslProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parse_event_plain(data: bytes) -> None:
    try:
        ev = parse_event_plain(b"Event-Name: X\n" + data)
        assert isinstance(ev, EslEvent)
    except EslProtocolError:
        pass


# ---------------------------------------------------------------- real sockets -----------


class Outbound:
    """An OutboundListener whose handler runs ``script(conn)``; the test plays the switch."""

    def __init__(self, script: Callable[[OutboundConnection], object], timeout: float = 2.0,
                 metrics: Metrics | None = None) -> None:
        self.done = gevent.event.AsyncResult()
        self.events: list[EslEvent] = []

        def handler(sock: Any, addr: Any) -> None:
            conn = OutboundConnection(addr, sock, command_timeout=timeout, metrics=metrics)
            conn.event_sink = self.events.append
            try:
                script(conn)
                self.done.set(conn)
            except BaseException as e:
                self.done.set_exception(e)
            finally:
                conn.stop(exit_timeout=0.5)

        self.listener = OutboundListener("127.0.0.1", 0, handler)
        self.listener.start()

    def dial(self) -> gevent.socket.socket:
        return gevent.socket.create_connection(("127.0.0.1", self.listener.port))

    def close(self) -> None:
        self.listener.stop(timeout=1)


def read_command(sock: Any) -> bytes:
    buf = b""
    while not buf.endswith(b"\n\n"):
        c = sock.recv(1)
        if not c:
            return buf
        buf += c
    return buf


def test_replay_outbound_capture_through_greenswitch(fixtures_dir: Path) -> None:
    frames = split_frames(
        (fixtures_dir / "03_socket_outbound_socket_recv_stream.txt").read_bytes())
    sent: list[bytes] = []

    def script(conn: OutboundConnection) -> None:
        data = conn.connect()
        uuid = data["Unique-ID"]
        assert data["Reply-Text"] == "+OK\n" and data["Channel-Destination-Number"] == "socket"
        assert conn.send("myevents").data == "+OK Events Enabled"
        assert conn.send("linger").data == "+OK will linger"
        assert conn.send(f"api uuid_getvar {uuid} fsreal_route").data
        assert conn.send("sendmsg\ncall-command: execute\nexecute-app-name: answer").data == "+OK"
        done = conn.expect(lambda e: e.headers.get("Application-UUID") == "fsreal-play-1"
                           and e.name == "CHANNEL_EXECUTE_COMPLETE")
        conn.send("sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
                  "execute-app-arg: tone_stream://x\nEvent-UUID: fsreal-play-1")
        gone = conn.expect(lambda e: e.headers.get("Content-Disposition") == "linger",
                           fail_on_hangup=False)
        conn.send("sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING")
        assert done.get(timeout=2).headers["Application-Response"]
        gone.get(timeout=2)

    srv = Outbound(script)
    sw = srv.dial()
    i = 0
    while i < len(frames):
        cmd = read_command(sw)
        if not cmd:
            break
        sent.append(cmd)
        replied = False   # the next reply, then the events that followed it
        while i < len(frames):
            f = frames[i]
            is_reply = b"Content-Type: command/reply" in f or b"Content-Type: api/response" in f
            if is_reply and replied:
                break
            replied = replied or is_reply
            i += 1
            sw.sendall(f)
        if cmd.startswith(b"exit"):
            for f in frames[i:]:
                sw.sendall(f)
            break
    conn = srv.done.get(timeout=5)
    names = [e.name for e in srv.events]
    assert "CHANNEL_ANSWER" in names and "CHANNEL_HANGUP_COMPLETE" in names
    assert [c.split(b"\n")[0] for c in sent][-1] == b"exit"
    assert conn.wait_closed(2)
    sw.close()
    srv.close()


def test_command_timeout_closes_only_that_connection() -> None:
    metrics = Metrics()
    results: dict[str, Any] = {}

    def script(conn: OutboundConnection) -> None:
        conn.connect()
        if results:     # second call: a switch that answers
            results["second"] = conn.send("myevents", timeout=0.5).data
            return
        with pytest.raises(EslTimeout):
            conn.send("myevents", timeout=0.2)
        results["closed"] = conn.wait_closed(1)
        with pytest.raises(EslDisconnected):
            conn.send("linger")

    srv = Outbound(script, metrics=metrics)
    silent = srv.dial()
    assert read_command(silent) == b"connect\n\n"
    silent.sendall(b"Content-Type: command/reply\nReply-Text: %2BOK%0A\nUnique-ID: u1\n\n")
    assert read_command(silent).startswith(b"myevents")   # ... and never answer it
    srv.done.get(timeout=5)
    assert results["closed"]
    assert silent.recv(100) == b""       # we closed it
    # the listener still takes the next call
    srv.done = gevent.event.AsyncResult()
    ok = srv.dial()

    def answer() -> None:
        while (cmd := read_command(ok)):
            reply = b"+OK%0A\nUnique-ID: u2" if cmd.startswith(b"connect") else b"+OK"
            ok.sendall(b"Content-Type: command/reply\nReply-Text: " + reply + b"\n\n")

    g = gevent.spawn(answer)
    srv.done.get(timeout=5)
    assert results["second"] == "+OK"
    g.kill()
    assert metrics.protocol_errors.labels(source="esl_outbound", kind="timeout")._value.get() == 1
    srv.close()


@pytest.mark.parametrize("garbage", [
    b"Content-Type: command/reply\nthis is not a header\n\n",
    b"Content-Type: command/reply\nReply-Text: \xc3\x28\n\n",
    b"Content-Length: 50\nContent-Type: text/event-plain\n\nEvent-Name: DTMF\n",  # truncated
    b"Content-Type: command/reply\nReply-Text: +OK\n\nContent-Type: command/reply\n"
    b"Reply-Text: +OK extra\n\n",   # a reply nobody asked for
])
def test_garbage_ends_only_its_connection(garbage: bytes) -> None:
    def script(conn: OutboundConnection) -> None:
        conn.connect()

    srv = Outbound(script)
    sw = srv.dial()
    read_command(sw)
    sw.sendall(garbage)
    sw.shutdown(socket.SHUT_WR)
    with pytest.raises((EslProtocolError, EslDisconnected)):
        srv.done.get(timeout=3)
    srv.close()


def test_connect_reply_without_uuid_is_a_protocol_error() -> None:
    srv = Outbound(lambda conn: conn.connect())
    sw = srv.dial()
    read_command(sw)
    sw.sendall(b"Content-Type: command/reply\nReply-Text: %2BOK%0A\n\n")
    with pytest.raises(EslProtocolError, match="Unique-ID"):
        srv.done.get(timeout=3)
    srv.close()


def test_event_json_is_refused_before_sending() -> None:
    def script(conn: OutboundConnection) -> None:
        conn.connect()
        with pytest.raises(EslUsageError):
            conn.send("event json ALL")
        with pytest.raises(EslUsageError):
            conn.send("api x\n\nsendmsg")

    srv = Outbound(script)
    sw = srv.dial()
    read_command(sw)
    sw.sendall(b"Content-Type: command/reply\nReply-Text: +OK\nUnique-ID: u\n\n")
    srv.done.get(timeout=3)
    srv.close()


def test_inbound_connect_times_out_without_auth_request() -> None:
    lsock = gevent.socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    conn = InboundConnection("127.0.0.1", port, "pw", command_timeout=0.3)
    with pytest.raises((EslTimeout, EslDisconnected)):
        conn.connect()
    lsock.close()


def test_inbound_pending_command_released_when_switch_drops() -> None:
    lsock = gevent.socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]

    def switch() -> None:
        s, _ = lsock.accept()
        s.sendall(b"Content-Type: auth/request\n\n")
        read_command(s)
        s.sendall(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
        read_command(s)   # the api command: drop the connection instead of answering
        s.close()

    g = gevent.spawn(switch)
    conn = InboundConnection("127.0.0.1", port, "pw", command_timeout=5)
    conn.connect()
    with pytest.raises(EslDisconnected):
        conn.send("api status")
    g.join(1)
    lsock.close()
    conn.stop()


def test_malformed_auth_never_shows_the_password() -> None:
    conn = InboundConnection("127.0.0.1", 1, "unused", command_timeout=0.5)
    with pytest.raises(EslUsageError) as e:
        conn.send("auth s3cr3t\n")
    assert "s3cr3t" not in str(e.value) and "auth ***" in str(e.value)
