"""Redis down from the start, on a running daemon (``Daemon.run()`` in this process, emulated
FreeSWITCH, real Vosk, espeak, a real Redis that is stopped before the daemon starts): the
daemon still gets ready (store reported degraded), a call is answered and takes its turns
without a lease (counted), the writes wait or are counted lost, and once Redis is up the call
and its slots are in the store. (Redis stopped mid-call: tests/test_resume_outage.py.)"""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from resume_rig import DID, InProcDaemon, dial_keys, readyz, wait_for, wait_quiet
from testkit import RedisServer

from callctl.sim.switch import Switch, SwitchConfig


@pytest.mark.slow
def test_redis_down_at_start_then_back(tmp_path: Path, vosk_engine: Any) -> None:
    server = RedisServer()
    server.stop()                                   # the port is closed: Redis is down
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0))
    sw.start()
    rig = InProcDaemon(sw, tmp_path, server.url, vosk_engine, "node-a",
                       f"down{uuidlib.uuid4().hex[:8]}")
    try:
        assert rig.wait_ready(), "the daemon gets ready without Redis"
        status, body = readyz(rig.daemon.http.port)
        assert status == 200 and json.loads(body)["status"] == {"store": "degraded"}
        sw.cfg.dialplan[DID] = rig.socket_app       # type: ignore[index]
        call = sw.place_call(DID, "+15557654321", "PCMU")
        assert call.wait_answered(10) and wait_quiet(call, 1, 0.5, 20)
        dial_keys(call, "12345678")
        assert wait_quiet(call, 2, 0.5, 20), call.heard()       # "I heard … correct?"
        assert rig.metric("callctl_call_leases_total", outcome="unleased") == 1
        assert rig.metric("callctl_store_writes_lost_total") + \
            rig.metric("callctl_store_queue_depth") > 0
        dial_keys(call, "1")                        # confirmed: transferred
        assert wait_for(lambda: rig.daemon.registry.get(call.uuid) is None, 15)

        server.start()
        assert wait_for(lambda: rig.store.healthy, 15)
        assert wait_for(lambda: (r := rig.store.get_call(call.uuid)) is not None and r.ended,
                        15)
        rec = rig.store.get_call(call.uuid)
        assert rec is not None and rec.end_cause == "TRANSFERRED"
        assert rec.dialog_state["slots"] == {"account": "12345678"}
        assert wait_for(lambda: json.loads(readyz(rig.daemon.http.port)[1])["status"]
                        == {"store": "healthy"}, 10)
    finally:
        rig.stop()
        sw.stop()
        server.stop()
