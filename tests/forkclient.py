"""A mod_audio_fork-like WebSocket client for the tests (``from forkclient import
ForkClient``): the fork server tests' fixtures and the robustness tests on a daemon."""

from __future__ import annotations

import time

import gevent
import gevent.socket
import numpy as np
import numpy.typing as npt
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    RejectConnection,
    Request,
    TextMessage,
)


class ForkClient:
    """What mod_audio_fork does on the wire (PROTOCOL.md §5.4/5.5), over a gevent socket.

    ``connect()`` sends the same upgrade headers as the capture in 04_audiofork_ws_frames.txt
    and returns the response event (AcceptConnection or RejectConnection)."""

    def __init__(self, address: tuple[str, int], target: str) -> None:
        self.sock = gevent.socket.create_connection(address, timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.target = target
        self.received: list[Event] = []

    def connect(self, subprotocols: tuple[str, ...] = ("audio.drachtio.org",)) -> Event:
        self.sock.sendall(self.ws.send(Request(
            host="127.0.0.1", target=self.target, subprotocols=list(subprotocols),
            extra_headers=[(b"Pragma", b"no-cache"), (b"Cache-Control", b"no-cache"),
                           (b"Origin", b"http://127.0.0.1")])))
        while True:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            for ev in self.ws.events():
                if isinstance(ev, AcceptConnection | RejectConnection):
                    return ev
            if not data:
                raise ConnectionError("closed during handshake")

    def text(self, s: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=s)))

    def binary(self, b: bytes, finished: bool = True) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=b, message_finished=finished)))

    def stream(self, samples: npt.NDArray[np.int16], realtime: bool = False,
               frame_bytes: int = 320) -> None:
        """Send L16 in 20 ms messages, paced in real time or as fast as possible."""
        data = samples.astype("<i2").tobytes()
        start = time.monotonic()
        for i, off in enumerate(range(0, len(data), frame_bytes)):
            self.binary(data[off:off + frame_bytes])
            if realtime:
                delay = start + (i + 1) * 0.02 - time.monotonic()
                gevent.sleep(max(0.0, delay))
            elif i % 10 == 9:
                gevent.sleep(0)

    def close(self, code: int = 1000) -> None:
        self.sock.sendall(self.ws.send(CloseConnection(code=code)))

    def send(self, ev: Event) -> None:
        """Any wsproto event as a frame (bytes that are not a frame: ``sock.sendall``)."""
        self.sock.sendall(self.ws.send(ev))

    def close_code(self, timeout: float = 3.0) -> int | None:
        """The server's close code (None: EOF without a Close frame, or ``timeout``); the
        socket is closed afterwards."""
        try:
            events = self.read_events(timeout)
        finally:
            self.sock.close()
        closes = [ev for ev in events if isinstance(ev, CloseConnection)]
        return closes[-1].code if closes else None

    def read_events(self, timeout: float = 2.0) -> list[Event]:
        """Read until the server closes the socket or ``timeout``; returns all events."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            self.ws.receive_data(data or None)
            for ev in self.ws.events():
                self.received.append(ev)
                if isinstance(ev, CloseConnection):
                    return self.received
            if not data:
                break
        return self.received
