"""DecodeScheduler: at most ``slots`` jobs in threads at once; URGENT before ROUTINE; waits
are bounded and a waiter that gives up never leaks its slot. Real threadpool, real threads."""

from __future__ import annotations

import threading
import time

import gevent
import pytest
from prometheus_client import CollectorRegistry

from callctl.asr.scheduler import DecodeScheduler, Priority, cpu_slots
from callctl.metrics import Metrics


def _job(sched: DecodeScheduler, log: list[str], name: str, priority: Priority,
         work_s: float = 0.05) -> None:
    with sched.slot(priority, timeout=10):
        gevent.get_hub().threadpool.spawn(time.sleep, work_s).get(timeout=10)
        log.append(name)


def test_urgent_waiters_go_before_routine_ones_queued_earlier() -> None:
    sched = DecodeScheduler(1)
    log: list[str] = []
    first = gevent.spawn(_job, sched, log, "running", Priority.ROUTINE, 0.2)
    gevent.sleep(0.01)                         # it holds the only slot
    waiters = [gevent.spawn(_job, sched, log, "routine-1", Priority.ROUTINE),
               gevent.spawn(_job, sched, log, "routine-2", Priority.ROUTINE)]
    gevent.sleep(0.01)
    waiters.append(gevent.spawn(_job, sched, log, "urgent", Priority.URGENT))
    gevent.joinall([first, *waiters], timeout=10, raise_error=True)
    assert log == ["running", "urgent", "routine-1", "routine-2"]
    assert sched.busy == 0 and not sched._waiting


def test_two_slots_run_two_jobs_at_once_and_no_more() -> None:
    sched = DecodeScheduler(2)
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    def job() -> None:
        with sched.slot(Priority.ROUTINE, 10):
            gevent.get_hub().threadpool.spawn(work).get(timeout=10)

    gevent.joinall([gevent.spawn(job) for _ in range(6)], timeout=10, raise_error=True)
    assert peak[0] == 2
    assert sched.busy == 0


def test_a_waiter_that_times_out_or_is_killed_leaks_nothing() -> None:
    sched = DecodeScheduler(1)
    log: list[str] = []
    holder = gevent.spawn(_job, sched, log, "holder", Priority.ROUTINE, 0.3)
    gevent.sleep(0.01)
    with pytest.raises(gevent.Timeout), sched.slot(Priority.URGENT, timeout=0.05):
        pass
    killed = gevent.spawn(_job, sched, log, "killed", Priority.URGENT)
    gevent.sleep(0.01)
    killed.kill()
    assert not sched._waiting
    holder.join(timeout=10)
    _job(sched, log, "after", Priority.ROUTINE)   # the slot is free again
    assert log == ["holder", "after"] and sched.busy == 0


def test_an_exception_in_the_body_gives_the_slot_back_and_waits_are_measured() -> None:
    metrics = Metrics(CollectorRegistry())
    sched = DecodeScheduler(1, metrics)
    with pytest.raises(ZeroDivisionError), sched.slot(Priority.URGENT, 1):
        gevent.get_hub().threadpool.spawn(lambda: 1 / 0).get(timeout=5)
    assert sched.busy == 0
    count = metrics.registry.get_sample_value("callctl_asr_decode_wait_seconds_count",
                                              {"priority": "urgent"})
    assert count == 1


def test_default_slots_follow_the_cpus_this_process_may_use() -> None:
    assert DecodeScheduler().slots == cpu_slots() >= 1
    assert DecodeScheduler(3).slots == 3
