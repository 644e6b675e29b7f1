"""The daemon process killed with SIGKILL mid-call, a new one started on the same ports: the
emulated call (kept up by the dialplan's fallback chain, which re-enters the socket app)
continues from its flow position with its collected digits, and the caller never hears a
long silence. Real processes, real Redis, real sockets, Vosk + espeak in the daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from resume_rig import (
    DID,
    dial_keys,
    fallback_chain,
    max_silence,
    start_daemon,
    wait_for,
    wait_quiet,
    wait_ready,
    write_config,
    write_tone,
)
from testkit import free_port

from callctl.config import StoreConfig
from callctl.sim.switch import Switch, SwitchConfig
from callctl.store import SessionStore, open_store

#: The longest silence the caller may hear between the crash and the resumed bot speaking
#: (socket re-entry + the restarted daemon's answer + the first prompt; loose on purpose).
MAX_GAP_S = 4.0
HOLD_S = 3.0                 # 1.5 s at the emulator speed 2


@pytest.fixture
def store(redis_url: str) -> Iterator[SessionStore]:
    s = open_store(StoreConfig(redis_url=redis_url, namespace=f"crash{uuidlib.uuid4().hex[:8]}"))
    s.start()
    yield s
    s.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_sigkill_mid_call_resumes_where_it_left_off(tmp_path: Path, redis_url: str,
                                                     store: SessionStore) -> None:
    esl_port = free_port()
    hold = write_tone(tmp_path / "hold.wav", HOLD_S)
    # More re-entries than the shipped dialplan's one: a daemon loading Vosk on a busy CI
    # machine may need several hold prompts' time to come back.
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=2.0,
                             dialplan={DID: fallback_chain(esl_port, hold, tries=8)}))
    sw.start()
    cfg, http_port = write_config(tmp_path / "callctl.toml", tmp_path, esl_port, sw.esl_port,
                                  redis_url, store.cfg.namespace)
    log = tmp_path / "daemon.log"
    first = start_daemon(cfg, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        assert wait_ready(first, http_port), log.read_text()[-3000:]
        call = sw.place_call(DID, "+15557654321", "PCMU")
        assert call.wait_answered(10)
        assert wait_quiet(call, 1, 0.6, 20), call.heard()     # "Please say or key in..."
        dial_keys(call, "12345678")
        assert wait_quiet(call, 2, 0.6, 20), call.heard()     # "I heard 1 2 3 ... correct?"
        assert store.flush(2)
        assert wait_for(lambda: (r := store.get_call(call.uuid)) is not None
                        and r.dialog_state.get("phase") == "confirm", 5)
        before = store.get_call(call.uuid)
        assert before is not None and before.flow_node == "ask_account"
        assert before.dialog_state["pending"] == "12345678"
        heard_before = len(call.heard())

        first.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(timeout=10)
        second = start_daemon(cfg, log)

        # the caller hears the hold prompt(s), then the resumed bot: prompt + the question
        def resumed() -> bool:
            return any(not h.source.endswith("hold.wav") for h in call.heard()[heard_before:])
        assert wait_for(resumed, 60), (call.heard(), log.read_text()[-3000:])
        assert call.hangup_cause is None, "the call must survive the crash"
        resumed_at = min(h.start for h in call.heard()[heard_before:]
                         if not h.source.endswith("hold.wav"))
        assert wait_quiet(call, heard_before + 2, 0.6, 30)
        gap = max_silence(call, killed_at, resumed_at)
        holds = sum(h.source.endswith("hold.wav") for h in call.heard())
        print(f"back after {resumed_at - killed_at:.1f} s ({holds} hold prompts), "
              f"longest silence {gap:.2f} s")
        assert gap <= MAX_GAP_S, (gap, call.heard())
        assert any(h.source.endswith("hold.wav") for h in call.heard()[heard_before:])

        # the flow moves on from where it was: "1" confirms the digits keyed BEFORE the crash
        dial_keys(call, "1")
        assert call.wait_hangup(1) is None
        assert wait_for(lambda: (r := store.get_call(call.uuid)) is not None and r.ended, 20), \
            log.read_text()[-3000:]
        after = store.get_call(call.uuid)
        assert after is not None
        assert after.dialog_state["slots"] == {"account": "12345678"}
        assert after.end_cause == "TRANSFERRED" and after.started_at == before.started_at
        call.hangup()
        assert call.wait_hangup(10) is not None
    finally:
        for proc in (first, second):
            if proc is not None:
                _kill(proc)
        sw.stop()
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "conversation.resumed" in names, names
    resumed_ev = next(e for e in events if e["event"] == "conversation.resumed")
    assert resumed_ev["flow_node"] == "ask_account" and resumed_ev["call_uuid"] == call.uuid
    assert "reconcile.summary" in names
