"""Reconciliation never leaks a lease: a parked call sent back to our socket whose caller
hangs up before it gets there has its lease released after the grace period (real Redis,
the emulated switch's API)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator

import gevent
import pytest

from callctl import config
from callctl.metrics import Metrics
from callctl.ownership import Ownership
from callctl.recovery import Recovery
from callctl.sim.api import execute
from callctl.sim.switch import Switch, SwitchConfig
from callctl.store import CallRecord, SessionStore, open_store

PARKED = "+15550000778"
DID = "+15551230000"


@pytest.fixture
def store(redis_url: str, metrics: Metrics) -> Iterator[SessionStore]:
    s = open_store(config.StoreConfig(redis_url=redis_url,
                                      namespace=f"park{uuidlib.uuid4().hex[:8]}"), metrics)
    s.start()
    yield s
    s.close()


def test_parked_caller_gone_before_our_socket_releases_the_lease(
        store: SessionStore, metrics: Metrics) -> None:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, dialplan={PARKED: "park"}))
    sw.start()
    try:
        call = sw.place_call(PARKED, "+15557654321", "PCMU")
        assert call.wait_answered(5)
        store.call_started(CallRecord(uuid=call.uuid, node="node-old", state="answered",
                                      did=DID, route="account", flow_node="ask_account",
                                      dialog_state={"node": "ask_account"}))
        assert store.flush(5)
        transfers: list[str] = []

        def api(cmd: str) -> str:
            name, _, arg = cmd.partition(" ")
            if name == "uuid_transfer":           # accepted, then the caller hangs up
                transfers.append(arg)
                out = execute(sw, name, arg)
                call.hangup()
                return out
            return execute(sw, name, arg)

        cfg = config.Config(daemon=config.DaemonConfig(node_id="node-a", resume_grace_s=0.3))
        ownership = Ownership(store, "node-a", 5.0, metrics)
        rec = Recovery(cfg, store, ownership, api, lambda uuid: False,
                       lambda: "127.0.0.1:1", metrics)
        plan = rec.run()
        assert plan is not None and [r.channel.uuid for r in plan.resume] == [call.uuid]
        assert transfers and store.owner(call.uuid) == "node-a"
        assert rec.follow_up is not None
        rec.follow_up.join(timeout=5)
        gevent.sleep(0.2)                         # the release runs in the background
        assert call.uuid not in ownership
        assert store.owner(call.uuid) is None     # not held for ever
    finally:
        sw.stop()
