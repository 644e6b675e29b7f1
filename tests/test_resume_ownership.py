"""Call ownership leases on a real Redis: one owner per call, takeover only after the lease
lapses, a lost lease reported once, calls going on without leases while Redis is down."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator

import gevent
import pytest
from testkit import RedisServer

from callctl.config import StoreConfig
from callctl.metrics import Metrics
from callctl.ownership import OWNED, REFUSED, UNLEASED, Ownership
from callctl.store import CallRecord, SessionStore, open_store
from callctl.store.redis import RedisStore


@pytest.fixture
def store(redis_url: str, metrics: Metrics) -> Iterator[SessionStore]:
    s = open_store(StoreConfig(redis_url=redis_url, namespace=f"own{uuidlib.uuid4().hex[:8]}"),
                   metrics)
    s.start()
    yield s
    s.close()


def leases(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("callctl_call_leases_total",
                                             {"outcome": outcome}) or 0.0


def test_new_call_is_owned_and_refused_to_a_second_node(store: SessionStore,
                                                        metrics: Metrics) -> None:
    a = Ownership(store, "node-a", 5.0, metrics)
    b = Ownership(store, "node-b", 5.0, metrics)
    uuid = str(uuidlib.uuid4())
    got = a.acquire(uuid)
    assert got.verdict == OWNED and got.record is None and got.holder == "node-a"
    other = b.acquire(uuid)
    assert other.refused and other.holder == "node-a"
    assert store.owner(uuid) == "node-a"
    # the same node coming back (a restarted daemon) gets its own call again
    assert a.acquire(uuid).verdict == OWNED
    assert leases(metrics, "owned") == 2 and leases(metrics, "refused") == 1


def test_two_nodes_racing_for_one_call_exactly_one_wins(store: SessionStore,
                                                        metrics: Metrics) -> None:
    nodes = [Ownership(store, f"node-{i}", 5.0, metrics) for i in range(2)]
    for _ in range(5):
        uuid = str(uuidlib.uuid4())
        store.call_started(CallRecord(uuid=uuid, node="node-x", state="answered"))
        assert store.flush(5)
        jobs = [gevent.spawn(n.acquire, uuid) for n in nodes for _ in range(4)]
        gevent.joinall(jobs, timeout=10)
        owners = {j.value.holder for j in jobs if j.value.verdict == OWNED}
        assert len(owners) == 1, [j.value for j in jobs]
        assert store.owner(uuid) in owners


def test_takeover_after_lapse_resumes_and_old_owner_lets_go(store: SessionStore,
                                                            metrics: Metrics) -> None:
    a = Ownership(store, "node-a", 0.3, metrics)
    b = Ownership(store, "node-b", 5.0, metrics)
    uuid = str(uuidlib.uuid4())
    assert a.acquire(uuid).verdict == OWNED
    lost: list[str] = []
    a.hold(uuid, lambda: lost.append(uuid))
    rec = CallRecord(uuid=uuid, node="node-a", state="answered", flow_node="ask_account",
                     dialog_state={"node": "ask_account"}, turns=1)
    store.save_call(rec)
    assert store.flush(5)
    assert b.acquire(uuid).refused                 # a's lease still runs
    gevent.sleep(0.5)                              # ... and lapses (a did not renew)
    got = b.acquire(uuid)
    assert got.verdict == OWNED and got.record is not None
    assert got.record.flow_node == "ask_account" and got.record.turns == 1
    a.renew_all()
    a.renew_all()
    assert lost == [uuid] and uuid not in a          # told once, no longer renewed
    assert store.owner(uuid) == "node-b"
    assert leases(metrics, "resumed") == 1 and leases(metrics, "lost") == 1
    a.release(uuid)                                # compare-and-delete: b keeps it
    gevent.sleep(0.2)
    assert store.owner(uuid) == "node-b"
    b.release(uuid)
    gevent.sleep(0.2)
    assert store.owner(uuid) is None


def test_renewal_greenlet_keeps_the_lease(store: SessionStore, metrics: Metrics) -> None:
    a = Ownership(store, "node-a", 0.3, metrics)
    b = Ownership(store, "node-b", 0.3, metrics)
    uuid = str(uuidlib.uuid4())
    a.start()
    try:
        assert a.acquire(uuid).verdict == OWNED
        a.hold(uuid, lambda: None)
        gevent.sleep(1.0)                         # > 3 lease lifetimes
        assert b.acquire(uuid).refused
    finally:
        a.stop()


def test_redis_down_calls_go_on_unleased_and_lease_follows_when_back(metrics: Metrics) -> None:
    server = RedisServer()
    store = RedisStore(StoreConfig(redis_url=server.url, timeout_s=0.3), metrics,
                       retry_min_s=0.02, ping_interval_s=0.1)
    store.start()
    try:
        own = Ownership(store, "node-a", 2.0, metrics)
        server.stop()
        uuid = str(uuidlib.uuid4())
        with gevent.Timeout(5):
            got = own.acquire(uuid)
        assert got.verdict == UNLEASED and not got.refused
        own.hold(uuid, lambda: pytest.fail("an unleased call is not 'lost'"))
        with gevent.Timeout(5):
            own.renew_all()                       # store down: skipped, no raise
        assert leases(metrics, "unleased") == 1
        server.start()
        with gevent.Timeout(10):
            while True:
                own.renew_all()
                if store.owner(uuid) == "node-a":
                    break
                gevent.sleep(0.1)
        assert Ownership(store, "node-b", 2.0, metrics).acquire(uuid).verdict == REFUSED
    finally:
        store.close(timeout=0.5)
        server.stop()

