"""The inbound control connection: backoff, readiness, api while up/down, reconnect."""

from __future__ import annotations

import random
import socket
from typing import Any

import gevent
import gevent.server
import pytest

from callctl.config import EslConfig
from callctl.esl.adapter import EslCommandFailed, EslDisconnected, EslEvent
from callctl.esl.control import ControlConnection, backoff_delay
from callctl.metrics import Metrics


def test_backoff_doubles_caps_and_jitters() -> None:
    hi = [backoff_delay(a, 30.0, lambda lo, hi: hi) for a in range(1, 12)]
    lo = [backoff_delay(a, 30.0, lambda lo, hi: lo) for a in range(1, 12)]
    assert hi[:4] == [0.5, 1.0, 2.0, 4.0] and hi[-1] == 30.0
    assert all(b <= 30.0 for b in hi) and all(a == b / 2 for a, b in zip(lo, hi, strict=True))
    r = random.Random(1)
    for a in range(1, 50):
        d = backoff_delay(a, 7.0, r.uniform)
        assert 0 < d <= 7.0


class FakeInboundSwitch:
    """Just enough of FreeSWITCH's inbound side: auth, event, api status, HEARTBEAT."""

    def __init__(self, port: int = 0) -> None:
        self.socks: list[Any] = []
        self.silent = False          # half-open: reads, never answers (first connection only)
        self.server = gevent.server.StreamServer(("127.0.0.1", port), self._serve)
        self.server.start()
        self.port = self.server.server_port

    def _serve(self, sock: Any, _addr: Any) -> None:
        self.socks.append(sock)
        sock.sendall(b"Content-Type: auth/request\n\n")
        buf = b""
        while True:
            data = sock.recv(4096)
            if not data:
                return
            buf += data
            if self.silent and len(self.socks) == 1:
                continue
            while b"\n\n" in buf:
                cmd, buf = buf.split(b"\n\n", 1)
                if cmd.startswith(b"auth"):
                    ok = b"+OK accepted" if cmd == b"auth pw" else b"-ERR invalid"
                    sock.sendall(b"Content-Type: command/reply\nReply-Text: " + ok + b"\n\n")
                elif cmd.startswith(b"event"):
                    sock.sendall(b"Content-Type: command/reply\n"
                                 b"Reply-Text: +OK event listener enabled plain\n\n")
                    body = b"Event-Name: HEARTBEAT\nEvent-Info: System%20Ready\n\n"
                    sock.sendall(b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s"
                                 % (len(body), body))
                elif cmd.startswith(b"bgapi"):
                    sock.sendall(b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: j-1\n"
                                 b"Job-UUID: j-1\n\n")
                    body = b"Event-Name: BACKGROUND_JOB\nJob-UUID: j-1\nContent-Length: 3\n\n+OK"
                    sock.sendall(b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s"
                                 % (len(body), body))
                elif cmd.startswith(b"api"):
                    out = b"UP 0 years\n" if cmd == b"api status" else b"-ERR nope\n"
                    sock.sendall(b"Content-Type: api/response\nContent-Length: %d\n\n%s"
                                 % (len(out), out))
                elif cmd.startswith(b"exit"):
                    sock.sendall(b"Content-Type: command/reply\nReply-Text: +OK bye\n\n")
                    return

    def stop(self) -> None:
        self.server.close()
        for s in self.socks:
            s.close()
        self.server.stop(timeout=0.5)


def cfg(port: int, password: str = "pw") -> EslConfig:
    return EslConfig(host="127.0.0.1", port=port, password=password, command_timeout_s=1.0,
                     reconnect_max_s=0.5)


def test_connects_gets_events_and_runs_api(metrics: Metrics) -> None:
    sw = FakeInboundSwitch()
    seen: list[EslEvent] = []
    cc = ControlConnection(cfg(sw.port), metrics, on_event=seen.append)
    cc.start()
    assert cc.wait_connected(3) and cc.connected
    assert cc.api("status").startswith("UP")
    with pytest.raises(EslCommandFailed):
        cc.api("bogus")
    assert cc.bgapi("status") == "j-1"
    gevent.sleep(0.05)
    assert [e.name for e in seen] == ["HEARTBEAT", "BACKGROUND_JOB"]
    assert seen[0].headers["Event-Info"] == "System Ready"
    assert seen[1].body == "+OK" and seen[1].headers["Job-UUID"] == "j-1"
    assert metrics.esl_connected._value.get() == 1
    cc.stop()
    sw.stop()
    assert metrics.esl_connected._value.get() == 0


def test_reconnects_after_switch_restart(metrics: Metrics) -> None:
    sw = FakeInboundSwitch()
    port = sw.port
    cc = ControlConnection(cfg(port), metrics)
    cc.start()
    assert cc.wait_connected(3)
    sw.stop()
    gevent.sleep(0.2)
    assert not cc.connected
    with pytest.raises(EslDisconnected):
        cc.api("status")
    assert metrics.esl_connected._value.get() == 0
    gevent.sleep(0.6)            # a few failed attempts against the closed port
    sw2 = FakeInboundSwitch(port)
    assert cc.wait_connected(5)
    assert cc.api("status").startswith("UP")
    assert metrics.esl_reconnects._value.get() == 1
    cc.stop()
    sw2.stop()


def test_wrong_password_keeps_retrying_without_crashing(metrics: Metrics) -> None:
    sw = FakeInboundSwitch()
    cc = ControlConnection(cfg(sw.port, password="bad"), metrics)
    cc.start()
    assert not cc.wait_connected(0.8)
    assert cc._greenlet is not None and not cc._greenlet.dead
    cc.stop()
    sw.stop()


def test_control_survives_emulated_switch_restart_while_a_call_goes_on(
        metrics: Metrics, tmp_path: Any) -> None:
    """Calls run on their own sockets: the control link drops and comes back; the call lives."""
    from callctl.config import Config, RouteConfig
    from callctl.esl.outbound import OutboundServer
    from callctl.sim.switch import Switch, SwitchConfig

    server = OutboundServer(Config(routes=(RouteConfig(did="5000", flow="t"),)), metrics,
                            port=0)
    server.start()
    plan = {"5000": f"socket 127.0.0.1:{server.port} async full"}
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0, speed=4.0, dialplan=plan))
    sw.start()
    port = sw.esl_port
    cc = ControlConnection(cfg(port, "ClueCon"), metrics)
    cc.start()
    assert cc.wait_connected(3)
    assert "UP" in cc.api("status")
    call = sw.place_call("5000")
    assert call.wait_answered(3)
    # the switch's ESL listener restarts: the control link drops; the call's socket stays
    sw._server.stop()
    gevent.sleep(0.3)
    assert not cc.connected
    assert len(server.registry) == 1
    from callctl.sim.inbound import InboundServer
    sw._server = InboundServer(sw, "127.0.0.1", port)
    sw._server.start()
    assert cc.wait_connected(5)
    assert "UP" in cc.api("status")
    assert metrics.esl_reconnects._value.get() == 1
    call.hangup()
    assert call.wait_hangup(5)
    cc.stop()
    sw.stop()
    server.stop()


def test_control_reconnects_to_a_whole_new_emulated_switch(metrics: Metrics) -> None:
    from callctl.sim.switch import Switch, SwitchConfig

    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0))
    sw.start()
    port = sw.esl_port
    cc = ControlConnection(cfg(port, "ClueCon"), metrics)
    cc.start()
    assert cc.wait_connected(3)
    sw.stop()
    gevent.sleep(0.3)
    assert not cc.connected
    sw2 = Switch(SwitchConfig(esl_port=port, event_delay_s=0))
    sw2.start()
    assert cc.wait_connected(5)
    assert "UP" in cc.api("status")
    cc.stop()
    sw2.stop()


def test_half_open_control_connection_is_probed_and_remade(metrics: Metrics) -> None:
    sw = FakeInboundSwitch()
    cc = ControlConnection(cfg(sw.port), metrics)
    cc.idle_probe_s, cc.probe_timeout_s = 0.3, 0.3
    cc.start()
    try:
        assert cc.wait_connected(3)
        gevent.sleep(1.0)                 # a switch that answers the probes: left alone
        assert len(sw.socks) == 1 and cc.connected
        assert cc._conn is not None and \
            cc._conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        sw.silent = True                  # gone without a FIN: no HEARTBEAT, no replies
        with gevent.Timeout(5):
            while len(sw.socks) < 2 or not cc.connected:
                gevent.sleep(0.05)
        assert cc.api("status").startswith("UP")
        assert metrics.esl_reconnects._value.get() == 1
    finally:
        cc.stop()
        sw.stop()
