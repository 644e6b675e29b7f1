"""Outbound ESL: the ``socket HOST:PORT async full`` dialplan application.

``run_socket_app`` (run by the channel's own greenlet) connects out to the daemon, trying
each ``|``-separated host in turn (default port 8084). If none answers the dialplan goes on
to its next action; with nothing after ``socket`` the call is hung up with
NORMAL_TEMPORARY_FAILURE. Otherwise an ``OutboundSession`` serves the socket in its own
greenlet and the application waits for ``connect`` (at most 25 s), then parks the channel
until it hangs up or the session lets go of it (daemon closed the socket or sent ``exit``:
the dialplan continues, i.e. the channel is hung up NORMAL_CLEARING as FreeSWITCH does after
"the last dialplan instruction").

Session protocol, as in captures 03 (linger) and 06 (no linger): no auth/request; ``connect``
→ CHANNEL_DATA command/reply (``Reply-Text: %2BOK%0A``, ``Socket-Mode``, ``Control``);
``myevents`` filters on the channel's Unique-ID; when the channel is down every event up to
CHANNEL_HANGUP_COMPLETE is written, then either the disconnect notice and a close (no
linger), or the linger notice (``Content-Length: 0``) and — with plain ``linger`` — the socket
and the channel stay until the client sends ``exit`` (``linger N``: closed N s later).
CHANNEL_DESTROY is never written to this socket.

Gap: ``async`` and sync (``static``) sockets behave the same (commands are queued).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import gevent
import gevent.event
from gevent import socket as gsocket

from callctl.sim import eslcodec
from callctl.sim.eslcodec import Command
from callctl.sim.eslconn import MYEVENTS, EslConnection

if TYPE_CHECKING:
    from callctl.sim.channel import Channel

CONNECT_TIMEOUT_S = 5.0
FIRST_PACKET_S = 25.0
DEFAULT_PORT = 8084
# commands an outbound socket without ``full`` may use
SINGLE_CHANNEL = frozenset({"connect", "myevents", "getvar", "divert_events", "sendmsg",
                            "filter", "resume", "exit", "..."})


def parse_socket_arg(arg: str) -> tuple[list[tuple[str, int]], bool, bool]:
    """``host[:port][|host[:port]…] [async] [full]`` → (targets, async, full)."""
    tokens = arg.split()
    if not tokens:
        raise ValueError("socket: no host given")
    targets: list[tuple[str, int]] = []
    for item in tokens[0].split("|"):
        item = item.split("/", 1)[0]
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"socket: bad target {item!r}")
        targets.append((host, int(port) if port else DEFAULT_PORT))
    flags = {t.lower() for t in tokens[1:]}
    return targets, "async" in flags, "full" in flags


def run_socket_app(ch: Channel, arg: str) -> None:
    """The ``socket`` application body (see module docstring)."""
    try:
        targets, async_, full = parse_socket_arg(arg)
    except ValueError as exc:
        ch.log.warning("sim.socket_bad_arg", arg=arg, error=str(exc))
        return
    for host, port in targets:
        try:
            sock = gsocket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            ch.log.warning("sim.socket_error", host=host, port=port, error=repr(exc))
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        ch.set_var("socket_host", host)
        session = OutboundSession(ch, sock, (host, port), async_, full)
        ch.outbound = session
        ch.bound.append(session)
        ch.controlled = True
        gevent.spawn(session.serve)
        gevent.wait([session.connected, session.released, ch.hungup], timeout=FIRST_PACKET_S,
                    count=1)
        if not session.connected.is_set():
            ch.log.warning("sim.socket_no_connect", host=host, port=port)
            session.close()
            return
        if ch.is_up() and ch.controlled:
            ch.park_loop()
        return
    if not ch.actions_left:
        ch.hangup("NORMAL_TEMPORARY_FAILURE")


class OutboundSession(EslConnection):
    """The emulator's side of one outbound socket (the daemon is the server)."""

    kind = "outbound"

    def __init__(self, ch: Channel, sock: socket.socket, peer: tuple[str, int],
                 async_: bool, full: bool) -> None:
        super().__init__(ch.switch, sock, peer)
        self.ch = ch
        self.session_uuid = ch.uuid
        self.async_ = async_
        self.full = full
        self.connected = gevent.event.Event()

    def handle(self, cmd: Command) -> None:
        line = cmd.line.strip()
        word, _, rest = line.partition(" ")
        low = word.lower()
        if not self.connected.is_set():
            if low == "connect":
                self.sw.add_listener(self)
                self.send(eslcodec.connect_reply(
                    self.sw.factory.channel_data_reply(self.ch), self.async_, self.full))
                self.connected.set()
            else:
                self.log.info("sim.outbound_first_not_connect", line=line[:80])
            return
        if (not self.full and low not in SINGLE_CHANNEL) or low == "connect":
            self.reply("-ERR command not found")
        elif low == "myevents":
            if self.myevents_uuid is not None:
                self.reply("-ERR aready enabled.")
                return
            self.myevents_uuid = self.ch.uuid
            self.events |= MYEVENTS
            if rest.strip().lower() in ("plain", "json"):
                self.fmt = rest.strip().lower()
            self.reply("+OK Events Enabled")
        elif low == "resume":
            self.ch.set_var("socket_resume", "true")
            self.reply("+OK")
        else:
            super().handle(cmd)

    def close(self) -> None:
        first = not self.closed
        super().close()
        if first and self.ch.is_up():
            self.ch.release_control()
