"""The emulated FreeSWITCH 1.10.12: configuration, channels, dialplan, event fan-out.

``Switch`` owns the channels (``channel.Channel``), the inbound ESL server
(``inbound.InboundServer``) and every ESL connection that listens to events. A fired event is
handed to every connection (``dispatch``); each connection decides with its own subscription
and filters whether to queue it, and writes it ``event_delay_s`` later (FreeSWITCH delivers
events ~10 ms after they happen). ``api`` commands are in ``callctl.sim.api``.

Usage (tests, benchmarks)::

    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0, speed=4.0,
                             dialplan={"5000": "socket 127.0.0.1:8040 async full"}))
    sw.start()
    call = sw.place_call("5000", script=lambda c: (c.wait_answered(5), c.hangup()))
    call.wait_hangup(10)
    sw.stop()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent

from callctl.log import get_logger
from callctl.sim.channel import Channel
from callctl.sim.events import Event, EventFactory
from callctl.sim.interfaces import ChannelMedia, Heard

log = get_logger()

VERSION = "1.10.12-release"


@dataclass(frozen=True)
class SwitchConfig:
    """Emulator settings. ``dialplan`` maps a destination number to ``"park"`` (answer, then
    park — the captures' dialplan) or ``"socket HOST:PORT async full"`` (several
    ``HOST:PORT`` joined with ``|`` are tried in order); unknown numbers park. A sequence of
    ``"app data"`` actions joined with ``;`` runs in order, as a dialplan extension does:
    ``"socket 127.0.0.1:8040 async full; playback /hold.wav; socket 127.0.0.1:8040 async
    full; hangup NORMAL_TEMPORARY_FAILURE"`` (after a ``socket`` whose daemon went away or
    could not be reached, the next action runs)."""

    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    password: str = "ClueCon"
    dialplan: Mapping[str, str] = field(default_factory=dict)
    event_delay_s: float = 0.010
    speed: float = 1.0
    hostname: str = "sim-fs"
    heartbeat_s: float = 20.0
    max_sessions: int = 1000
    max_linger_s: float = 3600.0


class Listener(Protocol):
    """An ESL connection that may want events."""

    def deliver(self, ev: Event) -> None: ...

    def close(self) -> None: ...


class SimCall:
    """The caller's view of one channel (what tests and scripted callers use)."""

    def __init__(self, ch: Channel) -> None:
        self._ch = ch
        self.uuid = ch.uuid
        self.did = ch.did
        self.caller_id = ch.caller_id
        self.codec = ch.codec_name

    @property
    def channel(self) -> Channel:
        return self._ch

    @property
    def media(self) -> ChannelMedia:
        return self._ch.media

    @property
    def event_names(self) -> list[str]:
        """Every event fired for this channel, in order."""
        return self._ch.event_names

    @property
    def hangup_cause(self) -> str | None:
        return self._ch.hangup_cause

    def wait_answered(self, timeout: float) -> bool:
        """True once the switch answered; False on timeout or if the call ended unanswered."""
        gevent.wait([self._ch.answered, self._ch.hungup], timeout=timeout, count=1)
        return self._ch.answered.is_set()

    def wait_hangup(self, timeout: float) -> str | None:
        """The hangup cause once the channel is destroyed, None on timeout."""
        if not self._ch.destroyed.wait(timeout=timeout):
            return None
        return self._ch.hangup_cause

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """The caller sends BYE."""
        self._ch.caller_hangup(cause)

    def dtmf(self, digit: str) -> None:
        self._ch.dtmf(digit)

    def heard(self) -> list[Heard]:
        return self._ch.heard()


class Switch:
    """One emulated FreeSWITCH. Start with ``start()``, stop with ``stop()``."""

    def __init__(self, cfg: SwitchConfig) -> None:
        self.cfg = cfg
        self.factory = EventFactory(cfg.hostname)
        self.started = time.monotonic()
        self.session_count = 0
        self.peak = 0
        self.max_linger_s = cfg.max_linger_s
        self._channels: dict[str, Channel] = {}
        self._listeners: set[Listener] = set()
        self._server: Any = None
        self._heartbeat: gevent.Greenlet[Any] | None = None
        self.esl_port = cfg.esl_port

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind the inbound ESL server (port 0 = any; then ``esl_port`` is the real one)."""
        from callctl.sim.inbound import InboundServer
        self._server = InboundServer(self, self.cfg.esl_host, self.cfg.esl_port)
        self._server.start()
        self.esl_port = self._server.port
        self._heartbeat = gevent.spawn(self._heartbeats)
        log.info("sim.started", host=self.cfg.esl_host, port=self.esl_port)

    def stop(self) -> None:
        """Hang up every channel, close every socket."""
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
        if self._server is not None:
            self._server.stop()
        for ch in list(self._channels.values()):
            ch.hangup("MANAGER_REQUEST")
            for conn in list(ch.bound):
                conn.close()
        gevent.wait([ch.destroyed for ch in self._channels.values()], timeout=5.0)
        for lst in list(self._listeners):
            lst.close()
        self._listeners.clear()

    # ------------------------------------------------------------------ channels

    def place_call(self, did: str, caller_id: str = "+15550001111", codec: str = "PCMU",
                   script: Callable[[SimCall], None] | None = None) -> SimCall:
        """A new inbound call to ``did``; ``script`` runs in its own greenlet (it waits for
        the answer itself)."""
        ch = Channel(self, did, caller_id, codec)
        self._channels[ch.uuid] = ch
        self.session_count += 1
        self.peak = max(self.peak, len(self._channels))
        call = SimCall(ch)
        ch.greenlet = gevent.spawn(ch.run)
        if script is not None:
            gevent.spawn(_run_script, script, call)
        return call

    def channels(self) -> list[SimCall]:
        return [SimCall(ch) for ch in self._channels.values()]

    def channel(self, uuid: str) -> Channel | None:
        return self._channels.get(uuid.strip())

    def all_channels(self) -> list[Channel]:
        return list(self._channels.values())

    def forget(self, ch: Channel) -> None:
        self._channels.pop(ch.uuid, None)

    def route(self, dest: str, dialplan: str = "XML") -> list[tuple[str, str]]:
        """Dialplan lookup: the applications to run for ``dest``. ``dialplan="inline"``
        takes ``app:data`` directly (``uuid_transfer … 'socket:h:p async full' inline``)."""
        if dialplan == "inline":
            app, _, data = dest.partition(":")
            return [(app, data)]
        action = self.cfg.dialplan.get(dest, "park").strip()
        if ";" in action:
            return parse_actions(action)
        if action.startswith("socket "):
            return [("socket", action[len("socket "):].strip())]
        return [("answer", ""), ("park", "")]

    # ------------------------------------------------------------------ events

    def add_listener(self, lst: Listener) -> None:
        self._listeners.add(lst)

    def remove_listener(self, lst: Listener) -> None:
        self._listeners.discard(lst)

    def dispatch(self, ev: Event) -> None:
        """Hand one event to every connection (each filters and queues it)."""
        for lst in list(self._listeners):
            try:
                lst.deliver(ev)
            except Exception:
                log.exception("sim.deliver_failed", esl_event=ev.name)

    def fire_api_event(self, cmd: str, arg: str) -> None:
        extra = [("API-Command", cmd)]
        if arg:
            extra.append(("API-Command-Argument", arg))
        self.dispatch(self.factory.plain_event("API", extra))

    def uptime_parts(self) -> list[tuple[int, str]]:
        us = int((time.monotonic() - self.started) * 1_000_000)
        sec, micro = divmod(us, 1_000_000)
        return [(sec // 31536000, "year"), (sec % 31536000 // 86400, "day"),
                (sec % 86400 // 3600, "hour"), (sec % 3600 // 60, "minute"),
                (sec % 60, "second"), (micro // 1000, "millisecond"),
                (micro % 1000, "microsecond")]

    def uptime_text(self) -> str:
        return ", ".join(f"{n} {u}{'' if n == 1 else 's'}" for n, u in self.uptime_parts())

    def _heartbeats(self) -> None:
        while True:
            gevent.sleep(self.cfg.heartbeat_s)
            up_ms = int((time.monotonic() - self.started) * 1000)
            n = str(len(self._channels))
            self.dispatch(self.factory.plain_event("HEARTBEAT", [
                ("Event-Info", "System Ready"), ("Up-Time", self.uptime_text()),
                ("FreeSWITCH-Version", f"{VERSION}~64bit"), ("Uptime-msec", str(up_ms)),
                ("Session-Count", n), ("Max-Sessions", str(self.cfg.max_sessions)),
                ("Session-Per-Sec", "30"), ("Session-Per-Sec-Last", "0"),
                ("Session-Per-Sec-Max", "1"), ("Session-Per-Sec-FiveMin", "1"),
                ("Session-Since-Startup", str(self.session_count)),
                ("Session-Peak-Max", str(self.peak)), ("Session-Peak-FiveMin", str(self.peak)),
                ("Idle-CPU", "99.000000")]))


def parse_actions(text: str) -> list[tuple[str, str]]:
    """``"app data; app data; ..."`` → ``[(app, data), ...]`` (empty items skipped)."""
    out = []
    for item in text.split(";"):
        app, _, data = item.strip().partition(" ")
        if app:
            out.append((app, data.strip()))
    return out


def _run_script(script: Callable[[SimCall], None], call: SimCall) -> None:
    try:
        script(call)
    except Exception:
        log.exception("sim.script_failed", call_uuid=call.uuid)
