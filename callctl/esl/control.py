"""The inbound control connection to FreeSWITCH: api/bgapi for the daemon and the NOC CLI,
HEARTBEAT and CHANNEL_HANGUP_COMPLETE events, reconnect with backoff.

How this works: one supervisor greenlet loops "connect → subscribe → wait until the
connection dies → sleep a backoff → again". The backoff doubles from ``BASE_DELAY_S`` up to
``esl.reconnect_max_s`` with jitter (each delay is drawn from [d/2, d]) and resets after a
connection that lived. ``connected`` is the readiness signal; calls on their own outbound
sockets never depend on this connection, so they go on while it reconnects.

A half-open connection (switch gone without a FIN/RST: power loss, a firewall dropping the
flow) is noticed: FreeSWITCH sends a HEARTBEAT every 20 s, so after ``idle_probe_s`` without
a byte from the switch the supervisor sends ``api status`` with ``probe_timeout_s``; no
answer (``EslTimeout``) closes the connection and it is made again. TCP keepalive is on too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import gevent
import gevent.event

from callctl.config import EslConfig
from callctl.esl.adapter import (
    EslDisconnected,
    EslError,
    EslEvent,
    EslTimeout,
    InboundConnection,
    check_reply,
)
from callctl.log import get_logger
from callctl.metrics import Metrics

BASE_DELAY_S = 0.5
SUBSCRIPTION = "event plain HEARTBEAT CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB"
IDLE_PROBE_S = 45.0      # no byte from the switch this long: probe it
PROBE_TIMEOUT_S = 5.0    # the probe's own timeout; no answer = the connection is dead


def backoff_delay(attempt: int, cap_s: float, rnd: Callable[[float, float], float],
                  base_s: float = BASE_DELAY_S) -> float:
    """Delay before reconnect ``attempt`` (1, 2, …): min(cap, base·2^(attempt-1)), jittered
    into [d/2, d]. Pure; ``rnd`` is ``random.uniform``-like."""
    d = min(cap_s, base_s * (2 ** min(max(attempt - 1, 0), 30)))
    return rnd(d / 2, d)


class ControlConnection:
    """The daemon's one inbound ESL connection, kept alive.

    Contract: ``start()`` returns at once; ``wait_connected(t)`` waits for the first
    connection; ``api()``/``bgapi()`` raise ``EslDisconnected`` while it is down (never
    block past their timeout); ``on_event`` gets every subscribed event, in the connection's
    dispatch greenlet (it must not block); ``stop()`` ends the supervisor and closes.
    """

    def __init__(self, cfg: EslConfig, metrics: Metrics,
                 on_event: Callable[[EslEvent], None] | None = None,
                 rnd: Callable[[float, float], float] = random.uniform) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.on_event = on_event
        self._rnd = rnd
        self._conn: InboundConnection | None = None
        self._up = gevent.event.Event()
        self._stopping = False
        self._greenlet: gevent.Greenlet | None = None
        self.log = get_logger(component="esl_control")
        self.connects = 0
        self.idle_probe_s = IDLE_PROBE_S
        self.probe_timeout_s = PROBE_TIMEOUT_S
        metrics.esl_connected.set(0)

    @property
    def connected(self) -> bool:
        c = self._conn
        return c is not None and c.connected and self._up.is_set()

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._supervise)

    def wait_connected(self, timeout: float | None) -> bool:
        return bool(self._up.wait(timeout))

    def _supervise(self) -> None:
        attempt = 0
        while not self._stopping:
            conn = InboundConnection(self.cfg.host, self.cfg.port, self.cfg.password,
                                     command_timeout=self.cfg.command_timeout_s,
                                     metrics=self.metrics)
            conn.event_sink = self._sink
            try:
                conn.connect()
                check_reply(SUBSCRIPTION, conn.send(SUBSCRIPTION))
            except EslError as e:
                conn.abort()
                attempt += 1
                delay = backoff_delay(attempt, self.cfg.reconnect_max_s, self._rnd)
                self.log.warning("esl.control_connect_failed", error=str(e), attempt=attempt,
                                 retry_in_s=round(delay, 2))
                gevent.sleep(delay)
                continue
            attempt = 0
            if self.connects:
                self.metrics.esl_reconnects.inc()
            self.connects += 1
            self._conn = conn
            self._up.set()
            self.metrics.esl_connected.set(1)
            self.log.info("esl.control_connected", host=self.cfg.host, port=self.cfg.port)
            self._watch(conn)
            self._up.clear()
            self.metrics.esl_connected.set(0)
            if not self._stopping:
                self.log.warning("esl.control_lost", reason=conn.close_reason)
                conn.stop(exit_timeout=0.1)
                attempt = 1
                gevent.sleep(backoff_delay(attempt, self.cfg.reconnect_max_s, self._rnd))

    def _watch(self, conn: InboundConnection) -> None:
        """Return once ``conn`` is closed; probe it when the switch has been silent for
        ``idle_probe_s``, and close it when the probe gets no answer."""
        while not conn.wait_closed(max(0.05, self.idle_probe_s / 4)):
            silent_s = time.monotonic() - conn.last_rx
            if silent_s < self.idle_probe_s:
                continue
            try:
                conn.send("api status", timeout=self.probe_timeout_s)
            except EslTimeout:                 # the send closed the connection already
                self.log.warning("esl.control_half_open", silent_s=round(silent_s, 1))
                conn.abort()
            except EslError:
                pass                           # closed meanwhile, or -ERR: it did answer

    def _sink(self, ev: EslEvent) -> None:
        if self.on_event is not None and ev.headers.get("Event-Name"):
            self.on_event(ev)

    def _live(self) -> InboundConnection:
        c = self._conn
        if c is None or not c.connected:
            raise EslDisconnected("control connection is down (reconnecting)")
        return c

    def api(self, command: str, timeout: float | None = None) -> str:
        """Run ``api <command>``; returns the body. Raises EslCommandFailed on -ERR/-USAGE,
        EslDisconnected while down, EslTimeout (then the connection is re-made)."""
        return check_reply(command, self._live().send(f"api {command}", timeout=timeout))

    def bgapi(self, command: str, timeout: float | None = None) -> str:
        """Run ``bgapi <command>``; returns the Job-UUID. The result arrives later as a
        BACKGROUND_JOB event through ``on_event``."""
        ev = self._live().send(f"bgapi {command}", timeout=timeout)
        check_reply(command, ev)
        return str(ev.headers.get("Job-UUID", ""))

    def stop(self) -> None:
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
        if self._conn is not None:
            self._conn.stop(exit_timeout=0.5)
        self._up.clear()
        self.metrics.esl_connected.set(0)
