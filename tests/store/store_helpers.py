"""Helpers and fixtures of the store tests (a module, not a conftest.py: several test folders
import ``conftest`` by name, and a second conftest module would shadow theirs). Test files
import the ``*_fixture`` functions; pytest knows them by their ``name``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from callctl.config import StoreConfig
from callctl.metrics import Metrics
from callctl.store.base import CallRecord
from callctl.store.redis import RedisStore

StoreFactory = Callable[..., RedisStore]


def store_config(url: str, **overrides: Any) -> StoreConfig:
    """A StoreConfig with a fresh namespace and test-sized timeouts (checks bypassed)."""
    values: dict[str, Any] = {"redis_url": url, "namespace": f"t{uuid.uuid4().hex[:10]}",
                              "timeout_s": 0.5, "retry_max_s": 0.2, "retention_s": 600}
    values.update(overrides)
    return StoreConfig(**values)


def new_call(node: str = "node-a", **kw: Any) -> CallRecord:
    values: dict[str, Any] = {"uuid": str(uuid.uuid4()), "node": node, "caller": "+15551234567",
                              "did": "+18005550100", "route": "support",
                              "started_at": 1_800_000_000.0}
    values.update(kw)
    return CallRecord(**values)


def _factory(url_default: str, metrics: Metrics) -> Iterator[StoreFactory]:
    made: list[RedisStore] = []

    def make(url: str | None = None, metrics_: Metrics | None = metrics,
             **overrides: Any) -> RedisStore:
        opts = {k: overrides.pop(k) for k in ("retry_min_s", "ping_interval_s", "batch_max")
                if k in overrides}
        store = RedisStore(store_config(url or url_default, **overrides), metrics_, **opts)
        store.start()
        made.append(store)
        return store

    yield make
    for s in made:
        s.close(timeout=0.5)
        try:  # leave nothing behind on a shared Redis
            client = redis.Redis.from_url(s.cfg.redis_url, socket_timeout=1)
            keys = list(client.scan_iter(match=f"{s.cfg.namespace}:*"))
            if keys:
                client.delete(*keys)
            client.close()
        except redis.RedisError:
            pass


def closed_port_url() -> str:
    """A redis:// URL of a loopback port nobody listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


class Proc:
    """A redis-server (or sentinel) process of one test, on its own loopback port."""

    def __init__(self, args: list[str], port: int) -> None:
        import subprocess

        self.port = port
        self.proc = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(name="make_store")
def make_store_fixture(redis_url: str, metrics: Metrics) -> Iterator[StoreFactory]:
    """Build started RedisStores on the shared test Redis; closed and cleaned at teardown."""
    yield from _factory(redis_url, metrics)


@pytest.fixture(name="make_private_store")
def make_private_store_fixture(redis_server: Any, metrics: Metrics) -> Iterator[StoreFactory]:
    """Build started RedisStores on the private Redis (which the test may stop/start)."""
    yield from _factory(redis_server.url, metrics)


@pytest.fixture(name="raw")
def raw_fixture(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the shared test Redis, to look behind the store's back."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()
