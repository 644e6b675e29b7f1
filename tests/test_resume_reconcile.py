"""Start-up reconciliation against the emulated switch and a real Redis: a call the store
says this node drove but FreeSWITCH no longer has is closed; a parked channel with live state
is sent back to our socket and resumed; a parked channel with no state anywhere is hung up
after the grace period; a channel another node holds is left alone."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from resume_rig import DID, InProcDaemon, dial_keys, wait_for, wait_quiet
from testkit import REPO, RedisServer

from callctl import config, recovery
from callctl.dialog import Dialogs
from callctl.dialog.base import CallContext, Dtmf
from callctl.sim.switch import SimCall, Switch, SwitchConfig
from callctl.store import LOST_CAUSE, CallRecord, SessionStore, open_store

PARKED = "+15550000777"


def confirm_state() -> dict[str, Any]:
    """The account flow's state after the caller keyed 12345678 (waiting for yes/no)."""
    cfg = config.Config(dialog=config.DialogConfig(
        flows_dir=str(REPO / "callctl" / "examples" / "flows")),
        routes=(config.RouteConfig(did=DID, flow="account"),))
    engine = Dialogs(cfg).engine("account", CallContext("x", "", DID, "account", "en"))
    engine.open()
    engine.respond(Dtmf("12345678"))
    return engine.state()


def parked(sw: Switch) -> SimCall:
    call = sw.place_call(PARKED, "+15557654321", "PCMU")
    assert call.wait_answered(5)
    return call


@pytest.mark.slow
def test_startup_reconciliation(tmp_path: Path, redis_url: str, vosk_engine: Any) -> None:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=4.0, dialplan={PARKED: "park"}))
    sw.start()
    ns = f"recon{uuidlib.uuid4().hex[:8]}"
    rig: InProcDaemon | None = None
    try:
        resumable, stateless, foreign = parked(sw), parked(sw), parked(sw)
        gone = str(uuidlib.uuid4())
        store: SessionStore = open_store(config.StoreConfig(redis_url=redis_url, namespace=ns))
        store.start()
        state = confirm_state()
        for uuid, node in ((gone, "node-a"), (resumable.uuid, "node-a"),
                           (foreign.uuid, "node-b")):
            store.call_started(CallRecord(
                uuid=uuid, node=node, state="answered", did=DID, route="account",
                started_at=1700000000.0, answered_at=1700000001.0, flow_node="ask_account",
                dialog_state=state))
        assert store.claim(gone, "node-a", 30)
        assert store.claim(foreign.uuid, "node-b", 30)      # node-b lives and holds it
        assert store.flush(5)

        rig = InProcDaemon(sw, tmp_path, redis_url, vosk_engine, "node-a", ns, grace_s=0.5)
        assert rig.wait_ready()
        # closed: FreeSWITCH does not have it
        rec = store.get_call(gone)
        assert rec is not None and rec.ended and rec.end_cause == LOST_CAUSE
        assert wait_for(lambda: store.owner(gone) is None, 5)
        # resumed: sent to our socket, picks up at the confirmation of the digits
        assert wait_quiet(resumable, 1, 0.6, 20), resumable.heard()
        assert rig.daemon.registry.get(resumable.uuid) is not None
        dial_keys(resumable, "1")
        assert wait_for(lambda: (r := store.get_call(resumable.uuid)) is not None and r.ended,
                        15)
        done = store.get_call(resumable.uuid)
        assert done is not None and done.dialog_state["slots"] == {"account": "12345678"}
        assert done.end_cause == "TRANSFERRED" and done.node == "node-a"
        # ended: no state anywhere, hung up cleanly after the grace period
        assert stateless.wait_hangup(10) == "NORMAL_TEMPORARY_FAILURE"
        # skipped: node-b's lease is live
        assert foreign.hangup_cause is None and store.owner(foreign.uuid) == "node-b"
        assert rig.daemon.registry.get(foreign.uuid) is None
        for action, n in (("close", 1), ("resume", 1), ("end", 1), ("skip", 1)):
            assert rig.metric("callctl_reconciled_calls_total", action=action) == n, action
        store.close()
    finally:
        if rig is not None:
            rig.stop()
        sw.stop()


@pytest.mark.slow
def test_reconciliation_retried_when_redis_did_not_answer(
        tmp_path: Path, vosk_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery, "RETRY_S", 1.5)
    server = RedisServer()
    server.stop()                                   # Redis is down when the daemon starts
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0))
    sw.start()
    ns = f"recon{uuidlib.uuid4().hex[:8]}"
    rig = InProcDaemon(sw, tmp_path, server.url, vosk_engine, "node-a", ns)
    store: SessionStore | None = None
    try:
        assert rig.wait_ready()
        assert wait_for(lambda: rig.daemon.recovery.attempts >= 1, 5)   # failed, will retry
        server.start()
        store = open_store(config.StoreConfig(redis_url=server.url, namespace=ns))
        store.start()
        gone = str(uuidlib.uuid4())
        store.call_started(CallRecord(uuid=gone, node="node-a", state="answered", did=DID))
        assert store.flush(5)
        assert wait_for(lambda: (r := store.get_call(gone)) is not None and r.ended, 15)
        rec = store.get_call(gone)
        assert rec is not None and rec.end_cause == LOST_CAUSE
        assert rig.metric("callctl_reconciled_calls_total", action="close") == 1
    finally:
        if store is not None:
            store.close()
        rig.stop()
        sw.stop()
        server.stop()
