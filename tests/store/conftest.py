"""Store test fixtures: RedisStores on a real Redis, each test under its own key namespace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from store_helpers import StoreFactory, _factory

from callctl.metrics import Metrics


@pytest.fixture
def make_store(redis_url: str, metrics: Metrics) -> Iterator[StoreFactory]:
    """Build started RedisStores on the shared test Redis; closed at teardown."""
    yield from _factory(redis_url, metrics)


@pytest.fixture
def make_private_store(redis_server: Any, metrics: Metrics) -> Iterator[StoreFactory]:
    """Build started RedisStores on the private Redis (which the test may stop/start)."""
    yield from _factory(redis_server.url, metrics)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the shared test Redis, to look behind the store's back."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()
