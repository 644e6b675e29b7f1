"""MemoryStore (demo only): same records, events, expiry and redaction as the Redis store."""

from __future__ import annotations

import dataclasses

from store_helpers import new_call

from callctl.config import StoreConfig
from callctl.store import TurnRecord
from callctl.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_call_then_retention() -> None:
    clock = Clock()
    store = MemoryStore(StoreConfig(retention_s=60, transcripts="redacted"), clock=clock)
    rec = new_call(flow_node="greet")
    store.call_started(rec)
    store.call_answered(rec)
    store.add_turn(dataclasses.replace(rec, turns=1), TurnRecord(0, "call 555 1234", "ok"))
    assert [c.uuid for c in store.active_calls()] == [rec.uuid]
    store.call_ended(dataclasses.replace(rec, turns=1, end_cause="NORMAL_CLEARING"))
    assert store.active_calls() == [] and store.healthy and store.flush(0)
    got = store.get_call(rec.uuid)
    assert got is not None and got.ended and got.flow_node == "greet"
    assert [t.transcript for t in store.get_turns(rec.uuid)] == ["call ### ####"]
    events = store.read_events()
    assert [e.kind for e in events] == ["call_started", "answered", "turn", "ended"]
    assert events[0].fields["caller"] == "********4567"
    assert [e.kind for e in store.read_events(since_id=events[1].id)] == ["turn", "ended"]
    assert len({e.id for e in events}) == 4
    clock.now += 61
    assert store.get_call(rec.uuid) is None and store.get_turns(rec.uuid) == []


def test_heartbeats_and_stream_bound() -> None:
    clock = Clock()
    store = MemoryStore(StoreConfig(heartbeat_ttl_s=5, events_maxlen=100), clock=clock)
    store.heartbeat("n1", {"calls": 1})
    assert [(n.node_id, n.info) for n in store.nodes()] == [("n1", {"calls": 1})]
    clock.now += 6
    assert store.nodes() == []
    rec = new_call()
    for i in range(150):
        store.add_turn(rec, TurnRecord(i))
    assert len(store.read_events(count=1000)) == 100
    assert len(store.get_turns(rec.uuid)) == 150
