"""Redis going away mid-call: writes never block, loss/backlog is counted, readiness says
degraded, and state catches up when Redis is back (the private server restarts EMPTY, so what
comes back is what the store replays)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from store_helpers import (  # noqa: F401 (pytest fixtures)
    StoreFactory,
    closed_port_url,
    make_private_store_fixture,
    make_store_fixture,
    new_call,
)

from callctl.metrics import Metrics
from callctl.store import StoreUnavailable, TurnRecord


def _wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        gevent.sleep(0.02)
    return cond()


def _metric(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def _turn(i: int) -> TurnRecord:
    return TurnRecord(index=i, transcript=f"utterance {i}", reply=f"reply {i}", at=time.time())


FAST: dict[str, Any] = {"retry_min_s": 0.02, "ping_interval_s": 0.1}


def test_redis_stopped_mid_call(make_private_store: StoreFactory, redis_server: Any,
                                metrics: Metrics) -> None:
    store = make_private_store(**FAST)
    ends_in_outage = new_call()
    spans_outage = new_call()
    for rec in (ends_in_outage, spans_outage):
        store.call_started(rec)
        store.call_answered(rec)
        store.add_turn(dataclasses.replace(rec, turns=1), _turn(0))
    assert store.flush(5) and store.healthy and store.status == "healthy"
    assert _metric(metrics, "callctl_store_up") == 1

    redis_server.stop()
    try:
        assert _wait_for(lambda: not store.healthy), "writer did not notice Redis going away"
        assert store.status == "degraded" and _metric(metrics, "callctl_store_up") == 0
        # The calls go on: every write is taken at once, without any I/O or yield.
        depth = store.writer.depth
        a = dataclasses.replace(ends_in_outage, turns=2, flow_node="goodbye")
        store.add_turn(a, _turn(1))
        store.call_ended(dataclasses.replace(a, end_cause="NORMAL_CLEARING"))
        b = dataclasses.replace(spans_outage, turns=2, flow_node="ask_2",
                                llm_history=({"role": "user", "content": "utterance 1"},))
        store.add_turn(b, _turn(1))
        assert store.writer.depth == depth + 3
        with pytest.raises(StoreUnavailable):
            store.get_call(b.uuid)
        with pytest.raises(StoreUnavailable):
            store.claim(b.uuid, "node-a", 1.0)
        assert not store.flush(0.3)
        assert _metric(metrics, "callctl_store_queue_depth") >= 3
        assert _metric(metrics, "callctl_store_writes_lost_total") == 0
    finally:
        redis_server.start()

    assert _wait_for(lambda: store.healthy)
    assert store.flush(5)
    assert _metric(metrics, "callctl_store_up") == 1
    assert _metric(metrics, "callctl_store_queue_depth") == 0
    got_a = store.get_call(a.uuid)
    assert got_a is not None and got_a.ended and got_a.end_cause == "NORMAL_CLEARING"
    assert [t.index for t in store.get_turns(a.uuid)] == [0, 1]
    got_b = store.get_call(b.uuid)
    assert got_b is not None and not got_b.ended and got_b.flow_node == "ask_2"
    assert got_b.llm_history == ({"role": "user", "content": "utterance 1"},)
    assert [t.transcript for t in store.get_turns(b.uuid)] == ["utterance 0", "utterance 1"]
    assert [c.uuid for c in store.active_calls()] == [b.uuid]
    # The events written during the outage arrived (those before it died with the server).
    kinds = [(e.uuid, e.kind) for e in store.read_events()]
    assert kinds == [(a.uuid, "turn"), (a.uuid, "ended"), (b.uuid, "turn")]


def test_queue_overflow_drops_oldest_and_counts(make_private_store: StoreFactory,
                                                redis_server: Any, metrics: Metrics) -> None:
    store = make_private_store(queue_size=10, **FAST)
    assert store.flush(5)
    redis_server.stop()
    try:
        assert _wait_for(lambda: not store.healthy)
        for i in range(30):
            store.heartbeat(f"node-{i:02d}")
        assert store.writer.depth == 10
        assert store.writer.lost == 20
        assert _metric(metrics, "callctl_store_writes_lost_total") == 20
    finally:
        redis_server.start()
    assert _wait_for(lambda: store.healthy) and store.flush(5)
    assert [n.node_id for n in store.nodes()] == [f"node-{i:02d}" for i in range(20, 30)]


def test_unreachable_redis_from_the_start(make_store: StoreFactory, metrics: Metrics) -> None:
    store = make_store(url=closed_port_url(), **FAST)
    rec = new_call()
    store.call_started(rec)
    store.call_ended(rec)
    assert _wait_for(lambda: not store.healthy)
    assert not store.flush(0.2)
    assert store.writer.depth == 2
    # Closing gives up on what is pending and counts it.
    assert store.close(timeout=0.2) is False
    assert _metric(metrics, "callctl_store_writes_lost_total") == 2
