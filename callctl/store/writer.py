"""The store's writer: a bounded queue drained by ONE greenlet that pipelines batches.

How this works: ``submit(entry)`` appends one entry (a tuple of ``Op`` applied together) to a
deque and wakes the writer; it does no I/O, never blocks and never raises. The writer
greenlet takes up to ``batch_max`` entries and hands them to ``apply`` (the backend's
pipeline). If the backend raises ``StoreUnavailable`` the batch goes back to the head of the
queue and is retried with exponential backoff (``retry_min_s`` doubling up to
``retry_max_s``); meanwhile new entries keep being accepted. When the queue is over its bound
the OLDEST entries are dropped and counted (``callctl_store_writes_lost_total``). Entries the
backend rejects for good (a per-entry error string) are dropped and counted too.

While idle the writer pings the backend every ``ping_interval_s`` (while down: every backoff
step), so ``healthy`` flips to False when Redis goes away even with no traffic, and back to
True when it returns; at that moment ``on_recover(outage_started_monotonic)`` is called (the
store uses it to replay the latest state of live calls, which the queue alone cannot restore
when entries were dropped or Redis restarted empty).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import gevent.event

from callctl.log import get_logger
from callctl.metrics import Metrics
from callctl.store.base import Op, StoreUnavailable

Entry = tuple[Op, ...]
#: Applies a batch; returns per entry None (applied) or an error text (rejected for good).
#: Raises StoreUnavailable when the backend cannot be reached (the batch is retried).
ApplyBatch = Callable[[Sequence[Entry]], Sequence[str | None]]


class StoreWriter:
    """Bounded write queue + one writer greenlet. See the module docstring for the contract."""

    def __init__(self, apply: ApplyBatch, ping: Callable[[], None], *,
                 queue_size: int, metrics: Metrics | None = None, batch_max: int = 256,
                 retry_min_s: float = 0.05, retry_max_s: float = 5.0,
                 ping_interval_s: float = 2.0,
                 on_recover: Callable[[float], None] | None = None,
                 log: Any = None) -> None:
        if queue_size < 1 or batch_max < 1:
            raise ValueError("queue_size and batch_max must be >= 1")
        self._apply = apply
        self._ping = ping
        self.queue_size = queue_size
        self.batch_max = batch_max
        self.retry_min_s = retry_min_s
        self.retry_max_s = max(retry_min_s, retry_max_s)
        self.ping_interval_s = ping_interval_s
        self.on_recover = on_recover
        self.metrics = metrics
        self.log = log if log is not None else get_logger(component="store_writer")
        self._queue: deque[Entry] = deque()
        self._inflight = 0
        self._wake = gevent.event.Event()
        self._drained = gevent.event.Event()
        self._drained.set()
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False
        self._closed = False
        self._up = True
        self._down_since: float | None = None
        #: Entries dropped so far (also in the metric); useful to tests and ``callctl show``.
        self.lost = 0
        self._set_up_gauge(1)

    # -- producer side ----------------------------------------------------------------

    def submit(self, entry: Entry) -> None:
        """Queue one entry. No I/O, never blocks; overflow drops the oldest entry (counted)."""
        if self._closed:
            self._count_lost(1, "store writer closed")
            return
        self._queue.append(entry)
        self._trim()
        self._drained.clear()
        self._update_depth()
        self._wake.set()

    @property
    def depth(self) -> int:
        """Entries waiting or in flight."""
        return len(self._queue) + self._inflight

    @property
    def healthy(self) -> bool:
        """False from the first failed write or ping until the next successful one."""
        return self._up

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the writer greenlet (idempotent)."""
        if self._greenlet is None and not self._closed:
            self._greenlet = gevent.spawn(self._run)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the queue to be written. True if it was."""
        return bool(self._drained.wait(timeout))

    def stop(self, timeout: float) -> bool:
        """Write what can be written within ``timeout`` s, then stop; the rest is counted lost.
        True if nothing was lost."""
        self._stopping = True
        self._wake.set()
        drained = self.flush(timeout) if self._greenlet is not None else not self._queue
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1.0)
            self._greenlet = None
        self._closed = True
        left = self.depth
        if left:
            self._queue.clear()
            self._inflight = 0
            self._count_lost(left, "store writer stopped with writes pending")
        self._update_depth()
        return drained and not left

    # -- the writer greenlet ------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.retry_min_s
        self._probe()
        while True:
            if not self._queue:
                self._drained.set()
                self._wake.clear()
                wait = self.ping_interval_s if self._up else backoff
                if not self._wake.wait(wait) and not self._queue:
                    if not self._probe():
                        backoff = min(backoff * 2, self.retry_max_s)
                    else:
                        backoff = self.retry_min_s
                continue
            n = min(self.batch_max, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._inflight = n
            try:
                errors = self._apply(batch)
            except StoreUnavailable as e:
                self._inflight = 0
                self._queue.extendleft(reversed(batch))
                self._trim()
                self._mark_down(e)
                self._update_depth()
                gevent.sleep(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            except Exception as e:  # a bug in a backend must not kill the writer
                self._inflight = 0
                self.log.exception("store_batch_failed", entries=n, error=type(e).__name__)
                self._count_lost(n, "store batch failed")
                self._update_depth()
                continue
            self._inflight = 0
            bad = [err for err in errors if err is not None]
            if bad:
                self._count_lost(len(bad), "store write rejected", error=bad[0][:200])
            backoff = self.retry_min_s
            self._mark_up()
            self._update_depth()

    def _probe(self) -> bool:
        try:
            self._ping()
        except StoreUnavailable as e:
            self._mark_down(e)
            return False
        self._mark_up()
        return True

    def _mark_down(self, err: Exception) -> None:
        if self._up:
            self._up = False
            self._down_since = time.monotonic()
            self._set_up_gauge(0)
            self.log.warning("store_down", error=str(err), pending=self.depth)

    def _mark_up(self) -> None:
        if self._up:
            return
        self._up = True
        since = self._down_since or time.monotonic()
        self._down_since = None
        self._set_up_gauge(1)
        self.log.info("store_up", outage_s=round(time.monotonic() - since, 3),
                      pending=self.depth, lost_total=self.lost)
        if self.on_recover is not None:
            try:
                self.on_recover(since)
            except Exception:
                self.log.exception("store_recover_failed")

    def _trim(self) -> None:
        over = len(self._queue) - self.queue_size
        if over > 0:
            for _ in range(over):
                self._queue.popleft()
            self._count_lost(over, "store queue full, oldest writes dropped")

    def _count_lost(self, n: int, why: str, **extra: Any) -> None:
        first = self.lost == 0
        self.lost += n
        if self.metrics is not None:
            self.metrics.store_writes_lost.inc(n)
        # Log the first loss and then every 1000th, not every write of a long outage.
        if first or self.lost // 1000 != (self.lost - n) // 1000:
            self.log.warning("store_writes_lost", reason=why, lost_total=self.lost, **extra)

    def _update_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.store_queue_depth.set(self.depth)

    def _set_up_gauge(self, v: int) -> None:
        if self.metrics is not None:
            self.metrics.store_up.set(v)
