"""Redis stopped mid-call: the call completes (turns never wait for Redis), a call arriving
meanwhile goes on without a lease (counted), /readyz stays ready but reports the store
degraded, and when Redis comes back (empty) the state catches up."""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from resume_rig import DID, InProcDaemon, dial_keys, readyz, wait_for, wait_quiet
from testkit import RedisServer

from callctl.sim.switch import Switch, SwitchConfig


def ready_body(rig: InProcDaemon) -> tuple[int, dict[str, Any]]:
    status, body = readyz(rig.daemon.http.port)
    return status, json.loads(body)


@pytest.mark.slow
def test_redis_stopped_mid_call(tmp_path: Path, vosk_engine: Any) -> None:
    server = RedisServer()
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=4.0))
    sw.start()
    rig = InProcDaemon(sw, tmp_path, server.url, vosk_engine, "node-a",
                       f"outage{uuidlib.uuid4().hex[:8]}", queue_size=10)
    try:
        assert rig.wait_ready()
        sw.cfg.dialplan[DID] = rig.socket_app       # type: ignore[index]
        status, body = ready_body(rig)
        assert status == 200 and body["ready"] and body["status"] == {"store": "healthy"}
        first = sw.place_call(DID, "+15557654321", "PCMU")
        assert first.wait_answered(10) and wait_quiet(first, 1, 0.5, 20)

        server.stop()
        dial_keys(first, "12345678")                # the turn goes on without Redis
        assert wait_quiet(first, 2, 0.5, 15), first.heard()
        assert wait_for(lambda: rig.store.degraded, 10)
        status, body = ready_body(rig)
        assert status == 200 and body["ready"] and body["status"] == {"store": "degraded"}
        second = sw.place_call(DID, "+15557654322", "PCMU")   # a new call: no lease
        assert second.wait_answered(10) and wait_quiet(second, 1, 0.5, 20)
        assert rig.metric("callctl_call_leases_total", outcome="unleased") == 1
        backlog = rig.metric("callctl_store_writes_lost_total") + \
            rig.metric("callctl_store_queue_depth")
        assert backlog > 0, "writes waiting for Redis (or lost) are counted"
        dial_keys(first, "1")                       # confirmed: transferred, call done
        assert wait_for(lambda: rig.daemon.registry.get(first.uuid) is None, 15)
        assert first.hangup_cause is None or first.hangup_cause != "NORMAL_TEMPORARY_FAILURE"

        server.start()                              # back, EMPTY: the store replays
        assert wait_for(lambda: rig.store.healthy, 15)
        assert wait_for(lambda: (r := rig.store.get_call(first.uuid)) is not None
                        and r.ended, 15)
        rec = rig.store.get_call(first.uuid)
        assert rec is not None and rec.end_cause == "TRANSFERRED"
        assert rec.dialog_state["slots"] == {"account": "12345678"}
        assert wait_for(lambda: rig.store.get_call(second.uuid) is not None, 10)
        assert wait_for(lambda: rig.store.owner(second.uuid) == "node-a", 10), \
            "the unleased call's lease is taken once Redis is back"
        assert ready_body(rig)[1]["status"] == {"store": "healthy"}
        second.hangup()
        assert second.wait_hangup(10) is not None
    finally:
        rig.stop()
        sw.stop()
        server.stop()
