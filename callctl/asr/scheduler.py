"""Decode scheduling: at most ``slots`` native decodes at once, a turn's end before catch-up.

How this works: every call's ``Listener`` hands its recognizer work (``accept`` of buffered
speech, ``final``) to one process-wide ``DecodeScheduler``. A job first takes a slot, then
runs in the hub's threadpool; with all slots busy it waits in a priority queue. ``URGENT``
jobs (the decode that completes a caller's speech and the final after it: the caller is
waiting for the reply) are served before ``ROUTINE`` ones (streaming catch-up during speech,
whose result nobody waits for: the listener batches the frames that arrive meanwhile and
decodes them in one bigger step), first come first served within a priority.

Why: with one thread per busy call, N decodes share the cores equally, so a caller whose
turn just ended waits behind every other call's streaming decode; with slots = cores the
final runs at full speed as soon as a slot frees (~0.1-0.3 s of native work at most).
Waits are bounded by the caller's timeout; a waiter that times out or is killed leaves the
queue (or passes on the slot it was just handed). A job that outlives the caller's own
timeout keeps running in its thread (native code cannot be interrupted) but its slot is
given back, so one hung decode cannot stall every call.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import os
import time
from collections.abc import Iterator

import gevent
from gevent.event import Event

from callctl.metrics import Metrics


class Priority(enum.IntEnum):
    URGENT = 0     # a turn's end: someone waits for this
    ROUTINE = 1    # streaming catch-up


def cpu_slots() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class DecodeScheduler:
    """See module docstring. One per process; safe to share across calls (hub only)."""

    def __init__(self, slots: int = 0, metrics: Metrics | None = None) -> None:
        self.slots = slots if slots > 0 else cpu_slots()
        self.metrics = metrics
        self.busy = 0
        self._waiting: list[tuple[int, int, Event]] = []
        self._seq = itertools.count()

    @contextlib.contextmanager
    def slot(self, priority: Priority = Priority.ROUTINE, timeout: float = 30.0
             ) -> Iterator[None]:
        """Hold one decode slot for the body (which starts the native job in the hub's
        threadpool and waits for it). Raises ``gevent.Timeout`` when no slot frees within
        ``timeout``; the slot is given back however the body ends."""
        t0 = time.monotonic()
        self._acquire(priority, timeout)
        if self.metrics is not None:
            self.metrics.decode_wait.labels(priority=priority.name.lower()).observe(
                time.monotonic() - t0)
        try:
            yield
        finally:
            self._release()

    def _acquire(self, priority: Priority, timeout: float) -> None:
        if self.busy < self.slots and not self._waiting:
            self.busy += 1
            return
        entry = (int(priority), next(self._seq), Event())
        heapq.heappush(self._waiting, entry)
        try:
            handed = entry[2].wait(timeout)
        except BaseException:                       # killed while waiting (call ended)
            self._abandon(entry)
            raise
        if not handed:
            self._abandon(entry)
            raise gevent.Timeout(timeout)

    def _abandon(self, entry: tuple[int, int, Event]) -> None:
        """A waiter gives up: leave the queue, or pass on a slot it was just handed."""
        if entry[2].is_set():
            self._release()
            return
        self._waiting.remove(entry)
        heapq.heapify(self._waiting)

    def _release(self) -> None:
        if self._waiting:
            _, _, event = heapq.heappop(self._waiting)
            event.set()                             # hand the slot over: busy unchanged
        else:
            self.busy -= 1
