"""Fixtures for the media tests: a real mod_audio_fork-like WebSocket client and a server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import gevent
import gevent.socket
import numpy as np
import numpy.typing as npt
import pytest
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

from callctl.media.forkserver import ForkServer
from callctl.metrics import Metrics


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


@pytest.fixture
def fork_server(metrics: Metrics, request: pytest.FixtureRequest) -> Iterator[ForkServer]:
    """A ForkServer on an ephemeral loopback port (pipeline rate: indirect param, 8000)."""
    rate = getattr(request, "param", 8000)
    server = ForkServer(metrics, port=0, sample_rate=rate, inbox_frames=2000,
                        handshake_timeout_s=2.0)
    server.start()
    host, port = server.address
    server.public_url = f"ws://{host}:{port}"
    yield server
    server.stop()


@pytest.fixture
def fork_client(fork_server: ForkServer) -> Callable[[str], ForkClient]:
    """Factory: a ForkClient for a URL returned by ``register`` or any request target."""
    prefix = fork_server.public_url

    def make(url_or_target: str) -> ForkClient:
        target = url_or_target[len(prefix):] if url_or_target.startswith(prefix) \
            else url_or_target
        return ForkClient(fork_server.address, target)

    return make
