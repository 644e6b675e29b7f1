"""The inbound control connection against the emulated switch (callctl.sim) over loopback:
backoff, readiness, api while up/down, reconnect, half-open detection."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.server
import pytest
from gevent import socket as gsocket

from callctl.config import EslConfig
from callctl.esl.adapter import EslCommandFailed, EslDisconnected, EslEvent
from callctl.esl.control import ControlConnection, backoff_delay
from callctl.metrics import Metrics
from callctl.sim.inbound import InboundServer
from callctl.sim.switch import Switch, SwitchConfig


def test_backoff_doubles_caps_and_jitters() -> None:
    hi = [backoff_delay(a, 30.0, lambda lo, hi: hi) for a in range(1, 12)]
    lo = [backoff_delay(a, 30.0, lambda lo, hi: lo) for a in range(1, 12)]
    assert hi[:4] == [0.5, 1.0, 2.0, 4.0] and hi[-1] == 30.0
    assert all(b <= 30.0 for b in hi) and all(a == b / 2 for a, b in zip(lo, hi, strict=True))
    r = random.Random(1)
    for a in range(1, 50):
        d = backoff_delay(a, 7.0, r.uniform)
        assert 0 < d <= 7.0


@pytest.fixture
def switch() -> Iterator[Switch]:
    """The emulated FreeSWITCH (inbound ESL on a free loopback port, password ``pw``),
    sending a HEARTBEAT every 0.2 s."""
    sw = Switch(SwitchConfig(esl_port=0, password="pw", event_delay_s=0, heartbeat_s=0.2))
    sw.start()
    yield sw
    sw.stop()


class Blackhole:
    """A loopback TCP relay in front of the emulator that can swallow everything on the
    connections it already carries, without a FIN or RST: a switch gone half-open (power loss,
    a firewall dropping the flow). The emulator cannot go half-open by itself (its sockets are
    closed properly), so this is the one piece of raw-socket machinery left here; the switch
    behind it is the real emulator. Connections accepted after ``swallow()`` relay normally."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.accepted = 0
        self._swallowing: set[int] = set()
        self._socks: list[gsocket.socket] = []
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()
        self.port = self.server.server_port

    def swallow(self) -> None:
        self._swallowing.update(range(1, self.accepted + 1))

    def _serve(self, client: gsocket.socket, _addr: Any) -> None:
        self.accepted += 1
        n = self.accepted
        upstream = gsocket.create_connection(("127.0.0.1", self.target), 5)
        self._socks += [client, upstream]
        pumps = [gevent.spawn(self._pump, client, upstream, n),
                 gevent.spawn(self._pump, upstream, client, n)]
        gevent.joinall(pumps, count=1)
        gevent.killall(pumps, block=False)
        upstream.close()
        client.close()

    def _pump(self, src: gsocket.socket, dst: gsocket.socket, n: int) -> None:
        try:
            while data := src.recv(65536):
                if n not in self._swallowing:
                    dst.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        self.server.stop(timeout=0.5)
        for s in self._socks:
            s.close()


def cfg(port: int, password: str = "pw") -> EslConfig:
    return EslConfig(host="127.0.0.1", port=port, password=password, command_timeout_s=1.0,
                     reconnect_max_s=0.5)


def test_connects_gets_events_and_runs_api(metrics: Metrics, switch: Switch) -> None:
    seen: list[EslEvent] = []
    cc = ControlConnection(cfg(switch.esl_port), metrics, on_event=seen.append)
    cc.start()
    assert cc.wait_connected(3) and cc.connected
    assert cc.api("status").startswith("UP")
    with pytest.raises(EslCommandFailed):
        cc.api("bogus")
    job = cc.bgapi("status")
    assert job
    with gevent.Timeout(3):
        while not any(e.name == "BACKGROUND_JOB" for e in seen) \
                or not any(e.name == "HEARTBEAT" for e in seen):
            gevent.sleep(0.02)
    assert {e.name for e in seen} == {"HEARTBEAT", "BACKGROUND_JOB"}   # nothing unsubscribed
    beat = next(e for e in seen if e.name == "HEARTBEAT")
    assert beat.headers["Event-Info"] == "System Ready"                # URL-decoded
    done = next(e for e in seen if e.name == "BACKGROUND_JOB")
    assert done.body.startswith("UP ") and done.headers["Job-UUID"] == job
    assert done.headers["Job-Command"] == "status"
    assert metrics.esl_connected._value.get() == 1
    cc.stop()
    assert metrics.esl_connected._value.get() == 0


def test_reconnects_after_switch_restart(metrics: Metrics, switch: Switch) -> None:
    """The switch's ESL listener goes away and comes back on the same port."""
    port = switch.esl_port
    cc = ControlConnection(cfg(port), metrics)
    cc.start()
    assert cc.wait_connected(3)
    switch._server.stop()
    gevent.sleep(0.2)
    assert not cc.connected
    with pytest.raises(EslDisconnected):
        cc.api("status")
    assert metrics.esl_connected._value.get() == 0
    gevent.sleep(0.6)            # a few failed attempts against the closed port
    switch._server = InboundServer(switch, "127.0.0.1", port)
    switch._server.start()
    assert cc.wait_connected(5)
    assert cc.api("status").startswith("UP")
    assert metrics.esl_reconnects._value.get() == 1
    cc.stop()


def test_wrong_password_keeps_retrying_without_crashing(metrics: Metrics,
                                                        switch: Switch) -> None:
    cc = ControlConnection(cfg(switch.esl_port, password="bad"), metrics)
    cc.start()
    assert not cc.wait_connected(0.8)
    assert cc._greenlet is not None and not cc._greenlet.dead
    assert metrics.esl_connected._value.get() == 0
    cc.stop()


def test_control_survives_emulated_switch_restart_while_a_call_goes_on(
        metrics: Metrics, tmp_path: Any) -> None:
    """Calls run on their own sockets: the control link drops and comes back; the call lives."""
    from callctl.config import Config, RouteConfig
    from callctl.esl.outbound import OutboundServer

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
    sw = Switch(SwitchConfig(esl_port=0, password="pw", event_delay_s=0))   # no HEARTBEAT soon
    sw.start()
    net = Blackhole(sw.esl_port)
    cc = ControlConnection(cfg(net.port), metrics)
    cc.idle_probe_s, cc.probe_timeout_s = 0.3, 0.3
    cc.start()
    try:
        assert cc.wait_connected(3)
        gevent.sleep(1.0)                 # a switch that answers the probes: left alone
        assert net.accepted == 1 and cc.connected
        assert cc._conn is not None and \
            cc._conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        net.swallow()                     # gone without a FIN: no HEARTBEAT, no replies
        with gevent.Timeout(5):
            while net.accepted < 2 or not cc.connected:
                gevent.sleep(0.05)
        assert cc.api("status").startswith("UP")
        assert metrics.esl_reconnects._value.get() == 1
    finally:
        cc.stop()
        net.stop()
        sw.stop()
