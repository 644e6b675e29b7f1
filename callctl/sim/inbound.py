"""Inbound ESL server of the emulated switch (mod_event_socket's listener, port 8021).

Each accepted socket gets ``Content-Type: auth/request``; until ``auth <password>`` succeeds
every command is answered ``-ERR command not found`` and no events flow. A wrong password gets
``-ERR invalid``, the disconnect notice and a close. The first packet must come within 25 s.
After auth the connection is an ordinary ``EslConnection`` plus ``myevents <uuid>`` (which
binds it to that session: ``linger``/``getvar``/``sendmsg`` without uuid then work).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import gevent
from gevent.server import StreamServer

from callctl.log import get_logger
from callctl.sim import eslcodec
from callctl.sim.eslcodec import Command
from callctl.sim.eslconn import MYEVENTS, EslConnection

if TYPE_CHECKING:
    from callctl.sim.switch import Switch

AUTH_TIMEOUT_S = 25.0
log = get_logger()


class InboundConnection(EslConnection):
    """One inbound client (greenswitch ``InboundESL``, fs_cli, the daemon)."""

    kind = "inbound"

    def __init__(self, sw: Switch, sock: socket.socket, peer: Any) -> None:
        super().__init__(sw, sock, peer)
        self.authed = False
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
                    self.authed = True
                    self.sw.add_listener(self)
                    self.reply("+OK accepted")
                else:
                    self.log.info("sim.esl_bad_auth")
                    self.reply("-ERR invalid")
                    self.disconnect()
            else:
                self.reply("-ERR command not found")
            return
        word, _, rest = line.partition(" ")
        low = word.lower()
        if low == "myevents":
            self._cmd_myevents(rest.split())
        else:
            super().handle(cmd)

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

    def __init__(self, sw: Switch, host: str, port: int) -> None:
        self.sw = sw
        self._server = StreamServer((host, port), self._handle)
        self.connections: set[InboundConnection] = set()

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
        conn = InboundConnection(self.sw, sock, peer)
        self.connections.add(conn)
        try:
            conn.serve()
        except Exception:
            log.exception("sim.esl_connection_crashed", peer=str(peer))
            conn.close()
        finally:
            self.connections.discard(conn)
