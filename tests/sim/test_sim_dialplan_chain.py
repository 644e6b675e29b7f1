"""The emulator's dialplan as a sequence of actions (the crash-safe fallback chain): after a
``socket`` that could not connect or whose daemon let go, the next action runs, as in
FreeSWITCH; the single-action forms keep their behaviour."""

from __future__ import annotations

import socket
from pathlib import Path

import gevent
from gevent.server import StreamServer
from resume_rig import write_tone
from testkit import free_port

from callctl.sim.switch import Switch, SwitchConfig, parse_actions


def test_parse_actions() -> None:
    assert parse_actions("socket 127.0.0.1:8040 async full; playback /h.wav ;; hangup") == [
        ("socket", "127.0.0.1:8040 async full"), ("playback", "/h.wav"), ("hangup", "")]


def _switch(dialplan: dict[str, str]) -> Switch:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=4.0, dialplan=dialplan))
    sw.start()
    return sw


def test_refused_socket_goes_on_to_the_next_action(tmp_path: Path) -> None:
    hold = write_tone(tmp_path / "hold.wav", 0.4)
    closed = free_port()
    sw = _switch({"1": f"socket 127.0.0.1:{closed} async full; answer; playback {hold}; "
                       "hangup USER_BUSY",
                  "2": f"socket 127.0.0.1:{closed} async full"})
    try:
        chain = sw.place_call("1")
        assert chain.wait_hangup(10) == "USER_BUSY"
        assert [h.source for h in chain.heard()] == [str(hold)]
        single = sw.place_call("2")                   # unchanged: nothing after socket
        assert single.wait_hangup(10) == "NORMAL_TEMPORARY_FAILURE"
    finally:
        sw.stop()


def test_socket_exit_without_hangup_runs_the_next_action(tmp_path: Path) -> None:
    """A daemon that sends ``exit`` without a hangup (a call another node owns) hands the
    call back to the dialplan: the next ``socket`` is tried."""
    hold = write_tone(tmp_path / "hold.wav", 0.2)
    seen: list[int] = []

    def refuse(sock: socket.socket, _addr: object) -> None:
        sock.sendall(b"connect\n\n")
        assert b"Content-Type: command/reply" in sock.recv(65536)
        seen.append(1)
        sock.sendall(b"exit\n\n")
        gevent.sleep(0.2)
        sock.close()

    server = StreamServer(("127.0.0.1", 0), refuse)
    server.start()
    app = f"socket 127.0.0.1:{server.server_port} async full"
    sw = _switch({"1": f"{app}; answer; playback {hold}; {app}; hangup CALL_REJECTED"})
    try:
        call = sw.place_call("1")
        assert call.wait_hangup(10) == "CALL_REJECTED"
        assert len(seen) == 2 and [h.source for h in call.heard()] == [str(hold)]
    finally:
        sw.stop()
        server.stop()
