"""Drain in-process: calls that end on their own end the drain early; calls arriving during
the drain are refused; the exit status is 0."""

from __future__ import annotations

import time
from pathlib import Path

import gevent
from testkit import free_port

from callctl.config import Config, DaemonConfig, EslConfig, MetricsConfig, RouteConfig
from callctl.daemon import Daemon, SdNotify
from callctl.metrics import Metrics
from callctl.sim.switch import Switch, SwitchConfig

DID = "+15551230000"


def test_drain_ends_early_when_calls_finish_and_refuses_new_ones(
        tmp_path: Path, metrics: Metrics) -> None:
    esl_port = free_port()
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0, speed=4.0,
                             dialplan={DID: f"socket 127.0.0.1:{esl_port} async full"}))
    sw.start()
    cfg = Config(daemon=DaemonConfig(drain_timeout_s=20.0),
                 esl=EslConfig(listen_port=esl_port, port=sw.esl_port, command_timeout_s=2.0,
                               reconnect_max_s=1.0),
                 metrics=MetricsConfig(listen_port=free_port()),
                 routes=(RouteConfig(did=DID, flow="t"),))
    d = Daemon(cfg, metrics, notifier=SdNotify({}))
    g = gevent.spawn(d.run)
    try:
        with gevent.Timeout(10):
            while not d.ready:
                gevent.sleep(0.05)
        calls = [sw.place_call(DID) for _ in range(3)]
        assert all(c.wait_answered(5) for c in calls)
        t0 = time.monotonic()
        d._enqueue("TERM")
        with gevent.Timeout(5):
            while not d.server.draining:
                gevent.sleep(0.01)
        late = sw.place_call(DID)
        assert not late.wait_answered(1.0)           # nobody takes it any more
        for c in calls:
            c.hangup()
        assert g.get(timeout=10) == 0
        assert time.monotonic() - t0 < 10            # well before drain_timeout_s
        assert all(c.wait_hangup(5) == "NORMAL_CLEARING" for c in calls)
        assert len(d.registry) == 0 and metrics.ready._value.get() == 0
    finally:
        g.kill()
        sw.stop()
