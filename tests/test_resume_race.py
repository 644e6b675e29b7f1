"""Two daemons (node-a, node-b) on one switch and one Redis, racing for one call: the one
without the lease lets go with ``exit`` (no hangup, the dialplan goes on), the lease holder
drives; when the lease moves to the other node the first lets go quietly and the other
resumes the call. At no moment do both drive it."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path
from typing import Any

import gevent
import pytest
import redis
from resume_rig import DID, InProcDaemon, wait_for, wait_quiet

from callctl.sim.switch import Switch, SwitchConfig


@pytest.mark.slow
def test_two_daemons_never_drive_one_call(tmp_path: Path, redis_url: str,
                                          vosk_engine: Any) -> None:
    dialplan: dict[str, str] = {}
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=4.0, dialplan=dialplan))
    sw.start()
    ns = f"race{uuidlib.uuid4().hex[:8]}"
    a = InProcDaemon(sw, tmp_path / "a", redis_url, vosk_engine, "node-a", ns, lease_s=1.0)
    b = InProcDaemon(sw, tmp_path / "b", redis_url, vosk_engine, "node-b", ns, lease_s=1.0)
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    both: list[float] = []
    watcher = None
    try:
        assert a.wait_ready() and b.wait_ready()
        # b is offered the call first, a next, then b again (the fallback chain)
        dialplan[DID] = (f"sleep 300; {b.socket_app}; {a.socket_app}; {b.socket_app}; "
                         "hangup NORMAL_TEMPORARY_FAILURE")
        call = sw.place_call(DID, "+15557654321", "PCMU")
        assert a.store.claim(call.uuid, "node-a", 30)        # node-a owns it already
        uuid = call.uuid

        def watch() -> None:
            while True:
                if a.daemon.registry.get(uuid) and b.daemon.registry.get(uuid):
                    both.append(gevent.get_hub().loop.now())
                gevent.sleep(0.01)
        watcher = gevent.spawn(watch)

        assert call.wait_answered(10)
        assert wait_quiet(call, 1, 0.5, 20), call.heard()
        assert a.daemon.registry.get(uuid) is not None
        assert b.metric("callctl_calls_rejected_total", reason="owned_elsewhere") == 1
        assert b.metric("callctl_call_leases_total", outcome="refused") == 1
        heard = len(call.heard())

        # the lease moves to node-b (as after a partition): a lets go, b resumes the call
        raw.set(a.store.keys.owner(uuid), "node-b", px=30000)
        assert wait_for(lambda: b.daemon.registry.get(uuid) is not None, 10)
        assert wait_for(lambda: a.daemon.registry.get(uuid) is None, 5)
        assert wait_quiet(call, heard + 1, 0.5, 20), call.heard()
        assert call.hangup_cause is None, "nobody hung the caller up"
        assert a.metric("callctl_call_leases_total", outcome="lost") == 1
        assert a.metric("callctl_calls_total", route="account", outcome="released",
                        cause="LEASE_LOST") == 1
        call.hangup()
        assert call.wait_hangup(10) is not None
        assert wait_for(lambda: (r := b.store.get_call(uuid)) is not None and r.ended, 10)
        rec = b.store.get_call(uuid)
        assert rec is not None and rec.node == "node-b"
        assert both == [], "both daemons drove the call at once"
    finally:
        if watcher is not None:
            watcher.kill()
        raw.close()
        a.stop()
        b.stop()
        sw.stop()
