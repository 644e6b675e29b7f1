"""Call ownership: the store lease that makes sure one daemon, and only one, drives a call.

How this works: when FreeSWITCH connects a call to the outbound socket, ``Ownership.acquire``
reads the call's stored record and takes its lease with ``store.takeover_if_expired``: free
or lapsed, or already this node's (a restarted daemon with the same ``daemon.node_id`` picks
its calls up at once; another node only once the old lease lapsed). The answer is an
``Acquired``:

============  ================================================================================
``owned``     we hold the lease; ``record`` is the live stored state to resume from (or None:
              a new call).
``refused``   another node holds a live lease: the daemon sends ``exit`` *without* hanging up,
              so FreeSWITCH's dialplan goes on (hold prompt, ``socket`` again, humans).
``unleased``  the store did not answer: the call goes on without a lease (logged once per
              outage, counted); the renewal loop takes the lease when the store is back.
              While the store is known to be down (a lease operation failed and no renewal
              has succeeded since) calls are unleased at once, without a round trip: an
              unreachable Redis must not add its timeouts to answering every call.
============  ================================================================================

One greenlet (``start``) renews every held lease each ``lease_s / 3``. A renewal that finds
the lease in another node's hands calls that call's ``on_lost`` hook once (the daemon then
ends its own session quietly, leaving the caller to the other node); a store that does not
answer is skipped until the next round (leases are the authority while they last, so a
store outage longer than ``lease_s`` lets another node take over calls, never two at once).
``release`` drops the lease at the end of the call, off the call's greenlet.

Contract: nothing here runs on a turn's critical path; every store call is bounded by
``store.timeout_s``; no method raises because the store is down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent

from callctl.log import get_logger
from callctl.metrics import Metrics
from callctl.store import CallRecord, SessionStore, StoreDataError, StoreError

#: Hangup cause (for logs and ``Conversation.on_end``) of a session we ended because another
#: node took the call over. The caller is not hung up; nothing is written to the store.
LEASE_LOST_CAUSE = "LEASE_LOST"

OWNED, REFUSED, UNLEASED = "owned", "refused", "unleased"


@dataclass(frozen=True)
class Acquired:
    """The answer of ``Ownership.acquire`` (see the module docstring)."""

    verdict: str
    record: CallRecord | None = None
    holder: str | None = None

    @property
    def refused(self) -> bool:
        return self.verdict == REFUSED


class Ownership:
    """Leases of one daemon's calls in ``store``, held as ``node_id`` for ``lease_s``."""

    def __init__(self, store: SessionStore, node_id: str, lease_s: float,
                 metrics: Metrics) -> None:
        self.store = store
        self.node_id = node_id
        self.lease_s = lease_s
        self.metrics = metrics
        self.log = get_logger(component="ownership", node=node_id)
        self._held: dict[str, Callable[[], None]] = {}
        self._down = False
        self._g: gevent.Greenlet[Any, Any] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the renewal greenlet. Idempotent."""
        if self._g is None:
            self._g = gevent.spawn(self._renew_forever)

    def stop(self) -> None:
        if self._g is not None:
            self._g.kill(block=False)
            self._g = None

    def __contains__(self, uuid: str) -> bool:
        return uuid in self._held

    # -- per call ---------------------------------------------------------------------------

    def acquire(self, uuid: str) -> Acquired:
        """Take the call's lease (module docstring). Never raises."""
        record: CallRecord | None = None
        if self._down:                        # known down: the renewal loop leases it later
            self.metrics.call_leases.labels(outcome=UNLEASED).inc()
            return Acquired(UNLEASED)
        try:
            try:
                record = self.store.get_call(uuid)
            except StoreDataError as e:
                self.log.warning("lease.bad_record", call_uuid=uuid, error=str(e))
            ok = self.store.takeover_if_expired(uuid, self.node_id, self.lease_s)
            holder = self.node_id if ok else self.store.owner(uuid)
        except StoreError as e:
            self._store_down("acquire", e)
            self.metrics.call_leases.labels(outcome=UNLEASED).inc()
            return Acquired(UNLEASED)
        self._store_up()
        if not ok:
            self.metrics.call_leases.labels(outcome=REFUSED).inc()
            return Acquired(REFUSED, None, holder)
        live = record if record is not None and not record.ended else None
        self.metrics.call_leases.labels(outcome="resumed" if live else OWNED).inc()
        return Acquired(OWNED, live, self.node_id)

    def hold(self, uuid: str, on_lost: Callable[[], None]) -> None:
        """Keep renewing the call's lease (an ``unleased`` call's is taken once the store is
        back); ``on_lost()`` runs once, on the renewal greenlet, if another node took it."""
        self._held[uuid] = on_lost

    def release(self, uuid: str) -> None:
        """Stop renewing; drop the lease in the background (compare-and-delete: a lease
        another node took is left alone)."""
        self._held.pop(uuid, None)
        gevent.spawn(self._release, uuid)

    def _release(self, uuid: str) -> None:
        try:
            self.store.release(uuid, self.node_id)
        except StoreError as e:
            self._store_down("release", e)     # the lease simply lapses

    # -- renewal ----------------------------------------------------------------------------

    def _renew_forever(self) -> None:
        while True:
            gevent.sleep(max(0.05, self.lease_s / 3))
            try:
                self.renew_all()
            except Exception:
                self.log.exception("lease.renew_failed")

    def renew_all(self) -> None:
        """One renewal round, one store round trip (the greenlet's body; public for tests).
        With no call held, a store that is healthy again ends a known outage."""
        uuids = list(self._held)
        if not uuids:
            if self._down and self.store.healthy:
                self._store_up()
            return
        try:
            renewed = self.store.renew_many(uuids, self.node_id, self.lease_s)
        except StoreError as e:
            self._store_down("renew", e)
            return
        self._store_up()
        for uuid, ok in zip(uuids, renewed, strict=True):
            if not ok and uuid in self._held:
                on_lost = self._held.pop(uuid)
                self.metrics.call_leases.labels(outcome="lost").inc()
                self.log.warning("lease.lost", call_uuid=uuid,
                                 holder=self._owner_or_none(uuid))
                try:
                    on_lost()
                except Exception:
                    self.log.exception("lease.on_lost_failed", call_uuid=uuid)

    def _owner_or_none(self, uuid: str) -> str | None:
        try:
            return self.store.owner(uuid)
        except StoreError:
            return None

    def _store_down(self, what: str, e: Exception) -> None:
        if not self._down:
            self._down = True
            self.log.warning("lease.store_unavailable", during=what, error=str(e)[:200],
                             calls=len(self._held))

    def _store_up(self) -> None:
        if self._down:
            self._down = False
            self.log.info("lease.store_back", calls=len(self._held))
