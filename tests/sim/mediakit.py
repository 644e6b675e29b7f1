"""Test kit for the emulator's media half: a ChannelSignals that records what it is asked to
fire (our own interface, so fine to fake), and a real WebSocket server (wsproto on a gevent
StreamServer over loopback) that records what a mod_audio_fork client sends."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
from gevent import socket
from gevent.server import StreamServer
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

UUID = "7dd5e34e-0000-4000-8000-00000000c0de"


@dataclass
class RecordingSignals:
    """ChannelSignals that records every call with its monotonic time."""

    uuid: str = UUID
    customs: list[tuple[float, str, str | None]] = field(default_factory=list)
    events: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    dtmfs: list[str] = field(default_factory=list)
    hungup: list[str] = field(default_factory=list)

    def fire_custom(self, subclass: str, body: str | None) -> None:
        self.customs.append((time.monotonic(), subclass, body))

    def fire_event(self, name: str, headers: dict[str, str]) -> None:
        self.events.append((time.monotonic(), name, dict(headers)))

    def dtmf(self, digit: str, duration_samples: int = 2000) -> None:
        self.dtmfs.append(digit)

    def caller_hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.hungup.append(cause)

    def is_up(self) -> bool:
        return not self.hungup

    def custom(self, subclass: str) -> list[str | None]:
        """Bodies of every CUSTOM event with this subclass so far."""
        return [b for _, s, b in self.customs if s == subclass]

    def names(self) -> list[str]:
        return [n for _, n, _ in self.events]


def wait_until(cond: Callable[[], Any], timeout: float = 5.0, step: float = 0.005) -> Any:
    """Poll ``cond`` until truthy (returned) or raise AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        gevent.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


@dataclass
class WsConn:
    """One accepted client connection as the server saw it."""

    raw_request: bytes
    request: Request
    sock: Any
    ws: WSConnection
    opened: float
    frames: list[tuple[float, str, Any]] = field(default_factory=list)   # (t, kind, data)
    close_code: int | None = None
    closed: gevent.event.Event = field(default_factory=gevent.event.Event)

    def header_names(self) -> list[str]:
        lines = self.raw_request.decode("latin-1").split("\r\n")[1:]
        return [ln.split(":", 1)[0] for ln in lines if ln]

    def texts(self) -> list[str]:
        return [d for _, k, d in self.frames if k == "text"]

    def binaries(self) -> list[tuple[float, bytes]]:
        return [(t, d) for t, k, d in self.frames if k == "binary"]

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def close(self, code: int = 1000) -> None:
        self.sock.sendall(self.ws.send(CloseConnection(code=code)))


class WsServer:
    """A real WebSocket server on 127.0.0.1 that accepts with ``subprotocol`` (None = no
    header) or rejects with HTTP ``reject_status``."""

    def __init__(self, subprotocol: str | None = "audio.drachtio.org",
                 reject_status: int | None = None) -> None:
        self.subprotocol = subprotocol
        self.reject_status = reject_status
        self.conns: list[WsConn] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port: int = self.server.server_port

    def url(self, path: str = "/fork") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.stop(timeout=1)

    def wait_conn(self, n: int = 1, timeout: float = 5.0) -> WsConn:
        wait_until(lambda: len(self.conns) >= n, timeout)
        return self.conns[n - 1]

    def _handle(self, sock: socket.socket, _addr: Any) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        raw = b""
        request: Request | None = None
        while request is None:
            data = sock.recv(65536)
            if not data:
                return
            raw += data
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, Request):
                    request = ev
        if self.reject_status is not None:
            sock.sendall(ws.send(RejectConnection(status_code=self.reject_status)))
            sock.close()
            return
        if self.subprotocol is not None and self.subprotocol not in request.subprotocols:
            # wsproto will not select a protocol the client did not offer: write it by hand.
            key = dict(request.extra_headers).get(b"sec-websocket-key", b"")
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                         b"\r\nSec-WebSocket-Protocol: " + self.subprotocol.encode() +
                         b"\r\n\r\n")
            gevent.sleep(1)
            sock.close()
            return
        sock.sendall(ws.send(AcceptConnection(subprotocol=self.subprotocol)))
        conn = WsConn(raw.split(b"\r\n\r\n")[0], request, sock, ws, time.monotonic())
        self.conns.append(conn)
        partial: list[Any] = []
        try:
            while True:
                data = sock.recv(65536)
                ws.receive_data(data or None)
                for ev in ws.events():
                    now = time.monotonic()
                    if isinstance(ev, TextMessage | BytesMessage):
                        partial.append(ev.data)
                        if ev.message_finished:
                            if isinstance(ev, TextMessage):
                                conn.frames.append((now, "text", "".join(partial)))
                            else:
                                conn.frames.append((now, "binary", b"".join(partial)))
                            partial = []
                    elif isinstance(ev, Ping):
                        sock.sendall(ws.send(ev.response()))
                    elif isinstance(ev, CloseConnection):
                        conn.close_code = ev.code
                        try:
                            sock.sendall(ws.send(ev.response()))
                        except Exception:
                            pass
                        return
                if not data:
                    return
        except OSError:
            return
        finally:
            conn.closed.set()
            sock.close()
