"""Call ownership: two daemons never both drive one call; an expired lease can be taken over."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import gevent
import pytest
from store_helpers import (
    StoreFactory,
    make_store_fixture,  # noqa: F401 (pytest fixtures)
)

from callctl.config import StoreConfig
from callctl.store import SessionStore
from callctl.store.memory import MemoryStore


@pytest.fixture(params=["redis", "memory"])
def pair(request: pytest.FixtureRequest, make_store: StoreFactory
         ) -> Iterator[tuple[SessionStore, SessionStore]]:
    """Two stores seeing the same data, as two daemons would (memory: one shared instance)."""
    if request.param == "memory":
        mem = MemoryStore(StoreConfig())
        yield mem, mem
    else:
        a = make_store()
        yield a, make_store(namespace=a.cfg.namespace)


def test_two_daemons_racing_exactly_one_wins(make_store: StoreFactory) -> None:
    a = make_store()
    b = make_store(namespace=a.cfg.namespace)
    for _ in range(30):
        call = str(uuid.uuid4())
        barrier = threading.Barrier(2)
        won: dict[str, bool] = {}

        def race(store: SessionStore, node: str, call: str = call,
                 barrier: threading.Barrier = barrier, won: dict[str, bool] = won) -> None:
            barrier.wait(timeout=5)
            won[node] = store.claim(call, node, 5.0)

        threads = [threading.Thread(target=race, args=(s, n)) for s, n in ((a, "A"), (b, "B"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert sorted(won.values()) == [False, True], won
        winner = next(n for n, w in won.items() if w)
        assert a.owner(call) == b.owner(call) == winner


def test_lease_expiry_lets_the_other_take_over(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    call = str(uuid.uuid4())
    assert a.claim(call, "A", 0.2)
    assert not b.claim(call, "B", 0.2)
    assert not b.takeover_if_expired(call, "B", 0.2)
    assert not b.release(call, "B") and a.owner(call) == "A"
    gevent.sleep(0.3)  # A died: nobody renews
    assert b.takeover_if_expired(call, "B", 5.0)
    assert b.owner(call) == "B"
    assert not a.renew(call, "A", 5.0), "A must learn it lost the call"
    assert not a.release(call, "A") and a.owner(call) == "B"
    assert b.release(call, "B") and a.owner(call) is None


def test_renewed_lease_holds(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    call = str(uuid.uuid4())
    assert a.claim(call, "A", 0.3)
    for _ in range(6):
        gevent.sleep(0.1)
        assert a.renew(call, "A", 0.3)
        assert not b.takeover_if_expired(call, "B", 0.3)
    assert a.owner(call) == "A"


def test_restarted_node_keeps_its_own_lease(pair: tuple[SessionStore, SessionStore]) -> None:
    a, _b = pair
    call = str(uuid.uuid4())
    assert a.claim(call, "A", 5.0)
    assert not a.claim(call, "A", 5.0)  # claim is strict
    assert a.takeover_if_expired(call, "A", 5.0)  # same node id after a restart
    # A lapsed lease nobody took is simply re-taken by its renewing owner.
    other = str(uuid.uuid4())
    assert a.claim(other, "A", 0.1)
    gevent.sleep(0.2)
    assert a.owner(other) is None
    assert a.renew(other, "A", 5.0) and a.owner(other) == "A"
