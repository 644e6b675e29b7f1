"""RedisStore on a real redis-server: call state, turns, events, retention, heartbeats."""

from __future__ import annotations

import dataclasses
import time

import gevent
import pytest
import redis
from store_helpers import (  # noqa: F401 (pytest fixtures)
    StoreFactory,
    make_store_fixture,
    new_call,
    raw_fixture,
)

from callctl.call.timeline import Turn
from callctl.store import CallRecord, TurnRecord
from callctl.store.keys import Keys


def _turn(index: int, text: str, reply: str = "ok") -> TurnRecord:
    return TurnRecord(index=index, transcript=text, reply=reply, at=time.time(),
                      hops_ms={"asr_final": 20.0}, latency_ms=240.0)


def test_state_readable_during_and_after_call(make_store: StoreFactory, raw: redis.Redis) -> None:
    store = make_store(retention_s=120)
    rec = new_call(dialog_state={"slot": "billing"}, flow_node="greet")
    store.call_started(rec)
    assert store.flush(5)
    got = store.get_call(rec.uuid)
    assert got is not None and got.state == "ringing" and got.dialog_state == {"slot": "billing"}
    assert [c.uuid for c in store.active_calls()] == [rec.uuid]
    assert [c.uuid for c in store.calls_of_node("node-a")] == [rec.uuid]
    assert store.calls_of_node("node-b") == []

    rec = dataclasses.replace(rec, state="listening", answered_at=1_800_000_001.0)
    store.call_answered(rec)
    rec = dataclasses.replace(rec, flow_node="ask_account", turns=1,
                              llm_history=({"role": "user", "content": "hello"},))
    store.add_turn(rec, _turn(0, "hello there"))
    assert store.flush(5)
    mid = store.get_call(rec.uuid)
    assert mid is not None
    assert (mid.flow_node, mid.turns, mid.answered_at) == ("ask_account", 1, 1_800_000_001.0)
    assert mid.llm_history == ({"role": "user", "content": "hello"},)
    turns = store.get_turns(rec.uuid)
    assert [(t.index, t.transcript, t.hops_ms) for t in turns] == [
        (0, "hello there", {"asr_final": 20.0})]

    store.call_ended(dataclasses.replace(rec, end_cause="NORMAL_CLEARING"))
    assert store.flush(5)
    after = store.get_call(rec.uuid)
    assert after is not None and after.ended and after.state == "ended"
    assert after.end_cause == "NORMAL_CLEARING"
    assert store.active_calls() == []
    assert [t.transcript for t in store.get_turns(rec.uuid)] == ["hello there"]
    keys = Keys(store.cfg.namespace)
    for key in (keys.call(rec.uuid), keys.turns(rec.uuid)):
        assert 0 < raw.ttl(key) <= 120


def test_turn_record_from_timeline_round_trips(make_store: StoreFactory) -> None:
    store = make_store()
    rec = new_call()
    t = Turn(index=0, transcript="what is my balance", reply="Let me check.")
    for i, name in enumerate(("speech_end", "asr_final", "dialog", "tts_first_chunk",
                              "playback_cmd", "playback_started")):
        t.mark(name, at=100.0 + i * 0.05)
    store.call_started(rec)
    store.add_turn(rec, TurnRecord.from_timeline(t, origin=99.0))
    assert store.flush(5)
    (got,) = store.get_turns(rec.uuid)
    assert got.marks_ms["speech_end"] == 1000.0
    assert got.hops_ms["play_out"] == pytest.approx(50.0)
    assert got.latency_ms == pytest.approx(250.0)


def test_event_stream_records_a_full_call(make_store: StoreFactory) -> None:
    store = make_store()
    rec = new_call()
    store.call_started(rec)
    store.call_answered(rec)
    store.add_turn(rec, _turn(0, "hi"))
    store.add_turn(rec, _turn(1, "agent please"))
    store.call_transferred(rec, "queue:humans")
    store.call_ended(dataclasses.replace(rec, end_cause="NORMAL_CLEARING", turns=2))
    assert store.flush(5)
    events = store.read_events()
    assert [e.kind for e in events] == ["call_started", "answered", "turn", "turn",
                                        "transferred", "ended"]
    assert {e.uuid for e in events} == {rec.uuid} and {e.node for e in events} == {"node-a"}
    assert all(e.ts > 1_700_000_000 for e in events)
    started = events[0].fields
    assert started["did"] == "+18005550100" and started["route"] == "support"
    assert started["caller"] == "********4567"
    assert "+15551234567" not in repr(events)
    assert [e.fields["index"] for e in events if e.kind == "turn"] == ["0", "1"]
    assert events[4].fields["target"] == "queue:humans"
    assert events[5].fields["cause"] == "NORMAL_CLEARING" and events[5].fields["turns"] == "2"
    # Paging: events after a given id.
    assert [e.kind for e in store.read_events(since_id=events[3].id, count=1)] == ["transferred"]
    assert store.read_events(since_id=events[-1].id) == []


def test_raw_caller_in_events_only_when_configured(make_store: StoreFactory) -> None:
    store = make_store(events_raw_caller=True)
    rec = new_call()
    store.call_started(rec)
    assert store.flush(5)
    assert store.read_events()[0].fields["caller"] == "+15551234567"


def test_events_stream_is_bounded(make_store: StoreFactory, raw: redis.Redis) -> None:
    store = make_store(events_maxlen=100)
    rec = new_call()
    for i in range(1500):
        store.add_turn(rec, _turn(i, "x"))
    assert store.flush(10)
    # MAXLEN ~ trims whole radix-tree nodes, so the bound is approximate (node size 100).
    assert raw.xlen(Keys(store.cfg.namespace).events) <= 300


@pytest.mark.parametrize(("mode", "transcript", "reply", "history"), [
    ("full", "my card is 4111 1111", "you said 4111", "card 4111"),
    ("redacted", "my card is #### ####", "you said ####", "card ####"),
    ("off", "", "", None),
])
def test_transcripts_full_redacted_off(make_store: StoreFactory, mode: str, transcript: str,
                                       reply: str, history: str | None) -> None:
    store = make_store(transcripts=mode)
    rec = new_call(llm_history=({"role": "user", "content": "card 4111"},))
    store.call_started(rec)
    store.add_turn(rec, _turn(0, "my card is 4111 1111", "you said 4111"))
    assert store.flush(5)
    (t,) = store.get_turns(rec.uuid)
    assert (t.transcript, t.reply) == (transcript, reply)
    got = store.get_call(rec.uuid)
    assert got is not None
    if history is None:
        assert got.llm_history == ()
    else:
        assert got.llm_history == ({"role": "user", "content": history},)


def test_node_heartbeats_expire(make_store: StoreFactory) -> None:
    store = make_store(heartbeat_ttl_s=0.4)
    store.heartbeat("node-a", {"calls": 3, "version": "0.1"})
    store.heartbeat("node-b")
    assert store.flush(5)
    nodes = store.nodes()
    assert [n.node_id for n in nodes] == ["node-a", "node-b"]
    assert nodes[0].info == {"calls": 3, "version": "0.1"} and nodes[0].ts > 1_700_000_000
    store.node_stopped("node-b")
    assert store.flush(5)
    assert [n.node_id for n in store.nodes()] == ["node-a"]
    gevent.sleep(0.6)
    assert store.nodes() == []


def test_active_set_pruned_when_hash_expired(make_store: StoreFactory, raw: redis.Redis) -> None:
    store = make_store()
    keys = Keys(store.cfg.namespace)
    rec = new_call()
    store.call_started(rec)
    assert store.flush(5)
    raw.delete(keys.call(rec.uuid))  # as if its retention lapsed while its node was gone
    assert store.active_calls() == []
    assert store.flush(5)
    assert raw.smembers(keys.active) == set()


def test_turns_written_twice_read_once(make_store: StoreFactory, raw: redis.Redis) -> None:
    store = make_store()
    rec = new_call()
    store.add_turn(rec, _turn(0, "a"))
    store.add_turn(rec, _turn(1, "b"))
    assert store.flush(5)
    # A batch retried after a lost EXEC reply appends the same turn again.
    raw.rpush(Keys(store.cfg.namespace).turns(rec.uuid), _turn(1, "b").to_json())
    assert [t.transcript for t in store.get_turns(rec.uuid)] == ["a", "b"]


def test_foreign_data_is_reported_not_crashed(make_store: StoreFactory,
                                              raw: redis.Redis) -> None:
    from callctl.store import StoreDataError

    store = make_store()
    keys = Keys(store.cfg.namespace)
    good = new_call()
    store.call_started(good)
    assert store.flush(5)
    raw.hset(keys.call("bad"), mapping={"uuid": "bad", "node": "x", "dialog_state": "[1"})
    raw.sadd(keys.active, "bad")
    with pytest.raises(StoreDataError):
        store.get_call("bad")
    assert [c.uuid for c in store.active_calls()] == [good.uuid]
    # A key of the wrong type makes that one write fail; it is counted, the writer goes on.
    raw.set(keys.turns(good.uuid), "not a list")
    store.add_turn(good, _turn(0, "x"))
    store.save_call(dataclasses.replace(good, flow_node="next"))
    assert store.flush(5)
    assert store.writer.lost == 1
    got = store.get_call(good.uuid)
    assert got is not None and got.flow_node == "next"


def test_call_record_hash_round_trip() -> None:
    rec = new_call(answered_at=1.5, dialog_state={"a": [1, 2]}, turns=3,
                   llm_history=({"role": "assistant", "content": "héllo"},))
    assert CallRecord.from_hash(rec.to_hash()) == rec
    assert all(isinstance(v, str) for v in rec.to_hash().values())
