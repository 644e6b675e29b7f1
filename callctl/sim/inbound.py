"""Inbound ESL server of the emulated switch (mod_event_socket's listener, port 8021).

Each accepted socket gets ``Content-Type: auth/request``; until ``auth <password>`` succeeds
every command is answered ``-ERR command not found`` and no events flow. A wrong password gets
``-ERR invalid``, the disconnect notice and a close. The first packet must come within 25 s.
After auth the connection is an ordinary ``EslConnection`` plus ``myevents <uuid>`` (which
binds it to that session: ``linger``/``getvar``/``sendmsg`` without uuid then work).

``userauth user@domain:pass`` checks the server's ``directory`` (``"user@domain"`` →
``EslUser``, empty by default like a vanilla directory without ``esl-password`` params): a
match gets the extended reply ``+OK accepted`` + ``Allowed-Events``, ``Allowed-API``,
``Allowed-LOG`` and the user's restrictions; anything else ``-ERR invalid``, the disconnect
notice and a close (as a wrong ``auth``).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from gevent.server import StreamServer

from callctl.log import get_logger
from callctl.sim import eslcodec
from callctl.sim.eslcodec import Command
from callctl.sim.eslconn import MYEVENTS, EslConnection, Permissions

if TYPE_CHECKING:
    from callctl.sim.switch import Switch

AUTH_TIMEOUT_S = 25.0
log = get_logger()


@dataclass(frozen=True)
class EslUser:
    """A directory user's ESL params: ``esl-password``, ``esl-allowed-events`` and
    ``esl-allowed-api`` (comma- or space-separated lists; ``None`` = param absent = all),
    ``esl-allowed-log``."""

    password: str
    allowed_events: str | None = None
    allowed_api: str | None = None
    allowed_log: bool = True


def parse_userauth(arg: str) -> tuple[str, str, str] | None:
    """``user@domain:pass`` → (user, domain, pass), split as mod_event_socket does (first
    ``@``, then the first ``:`` after it); None when user or domain is empty. No I/O, never
    raises."""
    user, _, domain = arg.partition("@")
    domain, _, password = domain.partition(":")
    user, sep, own = user.partition(":")
    if sep:
        password = own
    if not user or not domain:
        return None
    return user, domain, password


def _split_list(value: str) -> list[str]:
    return [t for t in value.replace(",", " ").split() if t]


def userauth_reply(user: EslUser) -> tuple[tuple[str, str], ...]:
    """The extra headers after ``Reply-Text: +OK accepted`` (values as configured)."""
    return (("Allowed-Events", user.allowed_events or "all"),
            ("Allowed-API", user.allowed_api or "all"),
            ("Allowed-LOG", "true" if user.allowed_log else "false"))


def permissions_of(user: EslUser) -> Permissions:
    events = None
    if user.allowed_events is not None:
        events = frozenset(t.upper().removeprefix("SWITCH_EVENT_") if "::" not in t else t
                           for t in _split_list(user.allowed_events))
    api = frozenset(_split_list(user.allowed_api)) if user.allowed_api is not None else None
    return Permissions(events=events, api=api, log=user.allowed_log)


class InboundConnection(EslConnection):
    """One inbound client (greenswitch ``InboundESL``, fs_cli, the daemon)."""

    kind = "inbound"

    def __init__(self, sw: Switch, sock: socket.socket, peer: Any,
                 directory: Mapping[str, EslUser] | None = None) -> None:
        super().__init__(sw, sock, peer)
        self.authed = False
        self.directory: Mapping[str, EslUser] = directory or {}
        self._auth_timer: gevent.Greenlet[Any] | None = None

    def on_open(self) -> None:
        self.send(eslcodec.auth_request())
        self._auth_timer = gevent.spawn_later(AUTH_TIMEOUT_S, self._auth_timeout)

    def _auth_timeout(self) -> None:
        if not self.authed and not self.closed:
            self.log.info("sim.esl_auth_timeout")
            self.close()

    def close(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.kill(block=False)
        super().close()

    def handle(self, cmd: Command) -> None:
        if self._auth_timer is not None:
            self._auth_timer.kill(block=False)
            self._auth_timer = None
        line = cmd.line.strip()
        if not self.authed:
            if line.startswith("auth "):
                if line[5:] == self.sw.cfg.password:
                    self._accept("+OK accepted")
                else:
                    self._refuse()
            elif line[:9].lower() == "userauth ":
                self._cmd_userauth(line[9:])
            else:
                self.reply("-ERR command not found")
            return
        word, _, rest = line.partition(" ")
        low = word.lower()
        if low == "myevents":
            self._cmd_myevents(rest.split())
        else:
            super().handle(cmd)

    def _accept(self, text: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.authed = True
        self.sw.add_listener(self)
        self.reply(text, extra)

    def _refuse(self) -> None:
        self.log.info("sim.esl_bad_auth")
        self.reply("-ERR invalid")
        self.disconnect()

    def _cmd_userauth(self, arg: str) -> None:
        parts = parse_userauth(arg)
        user = self.directory.get(f"{parts[0]}@{parts[1]}") if parts else None
        if parts is None or user is None or not user.password or parts[2] != user.password:
            self._refuse()
            return
        self.perms = permissions_of(user)
        self._accept("+OK accepted", userauth_reply(user))

    def _cmd_myevents(self, argv: list[str]) -> None:
        if self.myevents_uuid is not None:
            self.reply("-ERR aready enabled.")
            return
        if argv:
            target = argv[0]
        elif self.session_uuid is not None:
            target = self.session_uuid
        else:
            self.reply("-ERR invalid uuid")
            return
        ch = self.sw.channel(target)
        if ch is None:
            self.reply("-ERR invalid uuid")
            return
        self.session_uuid = self.myevents_uuid = ch.uuid
        ch.bound.append(self)
        self.events |= MYEVENTS
        self.reply("+OK Events Enabled")

class InboundServer:
    """gevent ``StreamServer`` accepting inbound ESL clients; one greenlet per client."""

    def __init__(self, sw: Switch, host: str, port: int,
                 directory: Mapping[str, EslUser] | None = None) -> None:
        self.sw = sw
        self._server = StreamServer((host, port), self._handle)
        self.connections: set[InboundConnection] = set()
        self.directory: dict[str, EslUser] = dict(directory or {})   # "user@domain" -> user

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(timeout=1)
        for conn in list(self.connections):
            conn.close()

    def _handle(self, sock: socket.socket, peer: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = InboundConnection(self.sw, sock, peer, self.directory)
        self.connections.add(conn)
        try:
            conn.serve()
        except Exception:
            log.exception("sim.esl_connection_crashed", peer=str(peer))
            conn.close()
        finally:
            self.connections.discard(conn)
