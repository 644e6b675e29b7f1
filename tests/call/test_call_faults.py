"""Faults on a call's own socket, with a tiny raw-socket fake switch (the emulator always
answers): a command that gets no reply, garbage, the socket closing mid-command, an event for
another call. Each ends at most its own call; the server keeps taking calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.socket
import pytest

from callctl.call.state import CallState
from callctl.config import Config, EslConfig, RouteConfig
from callctl.esl.outbound import OutboundServer
from callctl.metrics import Metrics

UUID = "11111111-2222-3333-4444-555555555555"
CONNECT = ("Content-Type: command/reply\nReply-Text: %2BOK%0A\nUnique-ID: " + UUID +
           "\nCaller-Caller-ID-Number: %2B15557654321\nCaller-Destination-Number: 5000\n"
           "Socket-Mode: async\nControl: full\n\n").encode()


def ok(text: str = "+OK") -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def event(name: str, uuid: str = UUID, extra: str = "") -> bytes:
    body = f"Event-Name: {name}\nUnique-ID: {uuid}\n{extra}\n".encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(body), body)


def read_command(sock: Any) -> bytes:
    buf = b""
    while not buf.endswith(b"\n\n"):
        c = sock.recv(1)
        if not c:
            return buf
        buf += c
    return buf


Script = Callable[[bytes, Any], bool]   # (command, sock) -> keep going


def fake_switch(port: int, on_answer: Script) -> gevent.Greenlet:
    """Connect like FreeSWITCH's socket app; answer setup commands; hand `sendmsg answer`
    (and everything after) to ``on_answer``."""

    def run() -> None:
        s = gevent.socket.create_connection(("127.0.0.1", port))
        try:
            while cmd := read_command(s):
                if cmd.startswith(b"connect"):
                    s.sendall(CONNECT)
                elif cmd.startswith((b"myevents", b"linger", b"event")):
                    s.sendall(ok())
                elif cmd.startswith(b"exit"):
                    s.sendall(ok("+OK bye"))
                    return
                elif not on_answer(cmd, s):
                    return
        finally:
            s.close()

    return gevent.spawn(run)


@pytest.fixture
def server(metrics: Metrics) -> Iterator[OutboundServer]:
    cfg = Config(esl=EslConfig(command_timeout_s=0.5, linger_s=2),
                 routes=(RouteConfig(did="5000", flow="t"),))
    srv = OutboundServer(cfg, metrics, port=0)
    srv.start()
    yield srv
    srv.stop()


def wait_calls(srv: OutboundServer, n: int, timeout: float = 3) -> bool:
    with gevent.Timeout(timeout, False):
        while len(srv.registry) != n:
            gevent.sleep(0.01)
    return len(srv.registry) == n


def answered_then(after: Callable[[bytes, Any], bool]) -> Script:
    def script(cmd: bytes, s: Any) -> bool:
        if b"execute-app-name: answer" in cmd:
            s.sendall(ok() + event("CHANNEL_ANSWER"))
            return True
        return after(cmd, s)
    return script


def test_switch_not_answering_ends_only_that_call(server: OutboundServer,
                                                  metrics: Metrics) -> None:
    silent = fake_switch(server.port, lambda cmd, s: gevent.sleep(5) or False)
    assert wait_calls(server, 1)
    session = next(iter(server.registry))
    assert wait_calls(server, 0, timeout=3)   # answer timed out after 0.5 s
    assert session.outcome == "failed" and session.cause == "SWITCH_TIMEOUT"
    assert metrics.protocol_errors.labels(source="esl_outbound", kind="timeout")._value.get() == 1
    silent.kill()
    # the next call is served normally
    hung: list[bytes] = []

    def polite(cmd: bytes, s: Any) -> bool:
        if b"call-command: hangup" in cmd:
            hung.append(cmd)
            s.sendall(ok() + event("CHANNEL_HANGUP", extra="Hangup-Cause: NORMAL_CLEARING"))
        return True

    g = fake_switch(server.port, answered_then(polite))
    assert wait_calls(server, 1)
    s2 = next(iter(server.registry))
    with gevent.Timeout(2):
        while s2.state is not CallState.LISTENING:
            gevent.sleep(0.01)
    s2.request_hangup("NORMAL_CLEARING")
    assert wait_calls(server, 0)
    assert hung and s2.cause == "NORMAL_CLEARING"
    g.join(2)


def test_event_for_unknown_call_is_ignored_and_counted(server: OutboundServer,
                                                       metrics: Metrics) -> None:
    def script(cmd: bytes, s: Any) -> bool:
        if b"execute-app-name: answer" in cmd:
            s.sendall(ok() + event("CHANNEL_ANSWER")
                      + event("CHANNEL_HANGUP", uuid="someone-else",
                              extra="Hangup-Cause: USER_BUSY")
                      + event("DTMF", extra="DTMF-Digit: 1"))
            return True
        if b"call-command: hangup" in cmd:
            s.sendall(ok() + event("CHANNEL_HANGUP", extra="Hangup-Cause: NORMAL_CLEARING"))
        return True

    g = fake_switch(server.port, script)
    assert wait_calls(server, 1)
    s = next(iter(server.registry))
    gevent.sleep(0.2)
    assert s.state is CallState.LISTENING      # the foreign hangup did not end our call
    assert metrics.protocol_errors.labels(source="esl_outbound",
                                          kind="unknown_call")._value.get() == 1
    s.request_hangup()
    assert wait_calls(server, 0)
    assert s.cause == "NORMAL_CLEARING"
    g.join(2)


@pytest.mark.parametrize("fault", [
    b"Content-Type: command/reply\nno colon here\n\n",
    b"Content-Length: 9999\nContent-Type: text/event-plain\n\nEvent-Name: DT",   # truncated
    b"Content-Type: command/reply\nReply-Text: \xff\n\n",
    b"Content-Length: 20\nContent-Type: text/event-json\n\n{\"Event-Name\":\"DTMF\"}",
    b"",                                                                        # just close
])
def test_garbage_or_close_mid_call_ends_only_that_call(server: OutboundServer,
                                                       fault: bytes) -> None:
    reached: list[CallState] = []

    def script(cmd: bytes, s: Any) -> bool:
        if b"execute-app-name: answer" in cmd:
            s.sendall(ok() + event("CHANNEL_ANSWER"))
            with gevent.Timeout(2):
                while not server.registry or \
                        next(iter(server.registry)).state is not CallState.LISTENING:
                    gevent.sleep(0.01)
            reached.append(next(iter(server.registry)).state)
            s.sendall(fault)
            return False          # and close the socket
        return True

    g = fake_switch(server.port, script)
    assert wait_calls(server, 1)
    s = next(iter(server.registry))
    assert wait_calls(server, 0, timeout=3)
    assert reached == [CallState.LISTENING]
    assert s.state is CallState.ENDED
    g.join(2)


def test_socket_closed_during_answer(server: OutboundServer) -> None:
    g = fake_switch(server.port, lambda cmd, s: False)   # close on `sendmsg answer`
    assert wait_calls(server, 0, timeout=3)
    g.join(1)
