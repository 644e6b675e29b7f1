"""Leases while Redis is unreachable: once the store is known down, answering a call costs
no Redis round trip (a blackholed Redis would add its timeouts to every answer); the lease
follows when Redis is back; renewals of all held calls go in one round trip."""

from __future__ import annotations

import socket
import threading
import uuid as uuidlib

import gevent
import pytest
from testkit import RedisServer

from callctl.config import StoreConfig
from callctl.metrics import Metrics
from callctl.ownership import OWNED, REFUSED, UNLEASED, Ownership
from callctl.store.redis import RedisStore


class Blackhole:
    """Accepts on Redis's port and never answers; counts the bytes it was sent. Runs in a
    real thread: the store's blocking socket would not let a greenlet run meanwhile."""

    def __init__(self, port: int) -> None:
        self.received = 0
        self.sock = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.sock.settimeout(0.1)
        self.running = True
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
                conn.settimeout(0.05)
                self.conns.append(conn)
            except OSError:
                pass
            for conn in self.conns:
                try:
                    self.received += len(conn.recv(4096))
                except OSError:
                    pass

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        for conn in self.conns:
            conn.close()
        self.sock.close()


def test_known_outage_answers_unleased_without_a_round_trip(metrics: Metrics) -> None:
    server = RedisServer()
    store = RedisStore(StoreConfig(redis_url=server.url, timeout_s=0.3), metrics,
                       retry_min_s=0.02, ping_interval_s=0.1)
    store.start()
    hole: Blackhole | None = None
    try:
        own = Ownership(store, "node-a", 2.0, metrics)
        server.stop()
        hole = Blackhole(server.port)             # Redis blackholed: every call times out
        first = str(uuidlib.uuid4())
        with gevent.Timeout(5):
            assert own.acquire(first).verdict == UNLEASED     # pays the timeout once
        own.hold(first, lambda: pytest.fail("an unleased call is not 'lost'"))
        sent = hole.received
        later = [str(uuidlib.uuid4()) for _ in range(3)]
        for uuid in later:
            assert own.acquire(uuid).verdict == UNLEASED
            own.hold(uuid, lambda: pytest.fail("an unleased call is not 'lost'"))
        assert hole.received == sent              # no Redis round trip for these answers
        hole.stop()
        hole = None
        server.start()
        with gevent.Timeout(10):                  # the renewal loop leases them all
            while True:
                own.renew_all()
                if all(store.owner(u) == "node-a" for u in [first, *later]):
                    break
                gevent.sleep(0.1)
        fresh = str(uuidlib.uuid4())
        assert own.acquire(fresh).verdict == OWNED            # the outage is over
        assert Ownership(store, "node-b", 2.0, metrics).acquire(first).verdict == REFUSED
    finally:
        if hole is not None:
            hole.stop()
        store.close(timeout=0.5)
        server.stop()


def test_renew_all_is_one_pipelined_round_that_reports_each_loss(redis_url: str,
                                                                 metrics: Metrics) -> None:
    store = RedisStore(StoreConfig(redis_url=redis_url,
                                   namespace=f"rn{uuidlib.uuid4().hex[:8]}"), metrics)
    store.start()
    try:
        own = Ownership(store, "node-a", 2.0, metrics)
        uuids = [str(uuidlib.uuid4()) for _ in range(4)]
        lost: list[str] = []
        for u in uuids:
            assert own.acquire(u).verdict == OWNED
            own.hold(u, lambda u=u: lost.append(u))
        store.release(uuids[1], "node-a")
        assert store.claim(uuids[1], "node-b", 30)     # node-b took one over
        assert store.renew_many(uuids, "node-a", 2.0) == [True, False, True, True]
        own.renew_all()
        assert lost == [uuids[1]] and uuids[1] not in own
        assert all(store.owner(u) == "node-a" for u in uuids if u != uuids[1])
    finally:
        store.close(timeout=0.5)
