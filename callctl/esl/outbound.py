"""The outbound ESL server: FreeSWITCH's ``socket`` app connects here once per call.

How this works: an ``OutboundListener`` (gevent StreamServer) runs ``_serve`` in a new
greenlet per connection; that greenlet becomes the call's ``CallSession`` greenlet. It sends
``connect``, picks the route from Caller-Destination-Number (``cfg.route_for``; unknown
numbers per ``routing``), checks capacity (``daemon.max_calls`` and the route's
``max_calls``) and either rejects the call with the configured cause (``sendmsg hangup``,
counted and logged) or subscribes (``myevents``, ``linger N``, ``event plain …``) and runs the
session. A failing connection is logged and ends only itself.

With an ``ownership`` (``callctl.ownership.Ownership``, set by the daemon when it has a
store) every call's lease is taken right after ``connect``: a call another live node holds is
refused by sending ``exit`` without a hangup (nothing subscribed, no ``linger``), so
FreeSWITCH's dialplan continues with its next action (the fallback chain in
freeswitch/conf/dialplan/public/10_callctl.xml); counted as ``calls_rejected{reason=
"owned_elsewhere"}``. A call with live stored state is resumed (``CallSession.resume_from``).
The lease is renewed while the call lives, and released when it ends; a lease lost to another
node ends our session with ``request_release`` (no hangup).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import gevent

from callctl.call.session import CallSession, ConversationFactory
from callctl.config import Config, RouteConfig
from callctl.esl.adapter import EslError, OutboundConnection, OutboundListener, check_reply
from callctl.log import get_logger
from callctl.metrics import Metrics

EVENTS = ("event plain PLAYBACK_START PLAYBACK_STOP CUSTOM mod_audio_fork::connect "
          "mod_audio_fork::connect_failed mod_audio_fork::disconnect "
          "mod_audio_fork::transcription mod_audio_fork::play_audio mod_audio_fork::kill_audio "
          "mod_audio_fork::error mod_audio_fork::json mod_audio_fork::transfer "
          "mod_audio_fork::buffer_overrun")


class CallRegistry:
    """The live calls of this daemon, by uuid. Used for capacity, drain and the NOC view."""

    def __init__(self) -> None:
        self._calls: dict[str, CallSession] = {}

    def add(self, s: CallSession) -> None:
        self._calls[s.uuid] = s

    def remove(self, s: CallSession) -> None:
        if self._calls.get(s.uuid) is s:
            del self._calls[s.uuid]

    def get(self, uuid: str) -> CallSession | None:
        return self._calls.get(uuid)

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[CallSession]:
        return iter(list(self._calls.values()))

    def count_route(self, label: str) -> int:
        return sum(1 for s in self._calls.values() if s.route_label == label)

    def by_state(self) -> dict[str, int]:
        return dict(Counter(s.state.value for s in self._calls.values()))


class OutboundServer:
    """Takes every call FreeSWITCH routes to ``esl.listen_host:esl.listen_port``.

    ``cfg`` may be swapped (SIGHUP) with ``update_config``; routes and limits apply to the
    next call. ``draining`` makes every new call be rejected with the over-capacity cause.
    """

    def __init__(self, cfg: Config, metrics: Metrics, registry: CallRegistry | None = None,
                 conversation_factory: ConversationFactory | None = None,
                 port: int | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.registry = registry if registry is not None else CallRegistry()
        self.conversation_factory = conversation_factory
        self.draining = False
        self.connections = 0
        self.log = get_logger(component="esl_outbound")
        self.listener = OutboundListener(cfg.esl.listen_host,
                                         cfg.esl.listen_port if port is None else port,
                                         self._serve,
                                         max_connections=2 * cfg.daemon.max_calls + 50)
        self.on_call_end: Callable[[CallSession], None] | None = None
        self.ownership: Any = None        # callctl.ownership.Ownership, set by the daemon

    @property
    def port(self) -> int:
        return self.listener.port

    def start(self) -> None:
        self.listener.start()
        self.log.info("esl.listening", host=self.cfg.esl.listen_host, port=self.port)

    def update_config(self, cfg: Config) -> None:
        self.cfg = cfg

    def stop_accepting(self) -> None:
        self.listener.stop_accepting()

    def stop(self) -> None:
        self.listener.stop(timeout=1.0)

    # -- one connection ------------------------------------------------------------------

    def _serve(self, sock: Any, address: Any) -> None:
        cfg = self.cfg
        conn = OutboundConnection(address, sock, cfg.esl.command_timeout_s, self.metrics)
        self.connections += 1
        try:
            channel = conn.connect()
        except EslError as e:
            self.log.warning("esl.connect_failed", peer=str(address), error=str(e))
            conn.stop(exit_timeout=0.5)
            return
        uuid = channel.get("Unique-ID", "")
        lease = self.ownership.acquire(uuid) if self.ownership is not None and uuid else None
        if lease is not None and lease.refused:
            self._let_go(conn, channel, lease.holder)
            return
        if lease is not None and lease.record is not None and lease.record.did:
            # sent back to us with ``uuid_transfer … inline`` the destination number is the
            # inline dialplan: route the resumed call by the number it was dialled with
            channel = {**channel, "Caller-Destination-Number": lease.record.did}
        route, label, reject = self._admit(channel, cfg)
        if reject is not None:
            if lease is not None:
                self.ownership.release(uuid)
            self._reject(conn, channel, *reject)
            return
        assert route is not None
        try:
            for cmd in ("myevents", f"linger {cfg.esl.linger_s}", EVENTS):
                check_reply(cmd, conn.send(cmd))
        except EslError as e:
            self.log.warning("esl.subscribe_failed", call_uuid=channel.get("Unique-ID"),
                             error=str(e))
            conn.stop(exit_timeout=0.5)
            return
        session = CallSession(conn, channel, route, label, self.metrics,
                              cfg.esl.command_timeout_s, self.conversation_factory,
                              cfg.esl.transfer_context, cfg.esl.bridge_profile,
                              idle_frames=cfg.playback.mode == "stream")
        if lease is not None:
            from callctl.ownership import LEASE_LOST_CAUSE

            session.resume_from = lease.record
            self.ownership.hold(uuid, lambda: session.request_release(LEASE_LOST_CAUSE))
        self.registry.add(session)
        try:
            session.run()
        finally:
            self.registry.remove(session)
            if lease is not None:
                self.ownership.release(uuid)
            if self.on_call_end is not None:
                self.on_call_end(session)

    def _admit(self, channel: dict[str, str], cfg: Config
               ) -> tuple[RouteConfig | None, str, tuple[str, str] | None]:
        """(route, route label, None) to take the call, or (None, label, (reason, cause))."""
        did = (channel.get("Caller-Destination-Number")
               or channel.get("Channel-Destination-Number", ""))
        route = cfg.route_for(did)
        if route is None:
            if cfg.routing.unknown_action != "default":
                return None, "unknown", ("no_route", cfg.routing.unknown_cause)
            route = RouteConfig(did=did, flow=cfg.routing.default_flow)
            label = "default"
        else:
            label = route.flow or route.did
        if self.draining:
            return None, label, ("draining", cfg.daemon.over_capacity_cause)
        if len(self.registry) >= cfg.daemon.max_calls:
            return None, label, ("capacity", cfg.daemon.over_capacity_cause)
        if route.max_calls and self.registry.count_route(label) >= route.max_calls:
            return None, label, ("route_capacity", cfg.daemon.over_capacity_cause)
        return route, label, None

    def _let_go(self, conn: OutboundConnection, channel: dict[str, str],
                holder: str | None) -> None:
        """Another node drives this call: ``exit`` without a hangup (the dialplan goes on)."""
        uuid = channel.get("Unique-ID", "")
        self.metrics.calls_rejected.labels(reason="owned_elsewhere").inc()
        get_logger(call_uuid=uuid).warning("call.owned_elsewhere", holder=holder,
                                           action="exit without hangup")
        conn.stop(exit_timeout=min(1.0, self.cfg.esl.command_timeout_s))

    def _reject(self, conn: OutboundConnection, channel: dict[str, str], reason: str,
                cause: str) -> None:
        uuid = channel.get("Unique-ID", "")
        self.metrics.calls_rejected.labels(reason=reason).inc()
        get_logger(call_uuid=uuid).warning(
            "call.reject", reason=reason, cause=cause,
            caller=channel.get("Caller-Caller-ID-Number", ""),
            did=channel.get("Caller-Destination-Number", ""), active=len(self.registry))
        started = time.monotonic()
        try:
            conn.send(f"sendmsg\ncall-command: hangup\nhangup-cause: {cause}")
            # Without linger FreeSWITCH closes the socket once the channel is down; wait for
            # that (bounded) so the queued hangup is not cut short by our exit.
            conn.wait_closed(self.cfg.esl.command_timeout_s)
        except EslError as e:
            self.log.warning("call.reject_failed", call_uuid=uuid, error=str(e))
        finally:
            conn.stop(exit_timeout=0.5)
            gevent.idle()
            self.log.debug("call.rejected", call_uuid=uuid,
                           ms=round((time.monotonic() - started) * 1000))
