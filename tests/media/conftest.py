"""Fixtures for the media tests: a real mod_audio_fork-like WebSocket client and a server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from forkclient import ForkClient

from callctl.media.forkserver import ForkServer
from callctl.metrics import Metrics


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
