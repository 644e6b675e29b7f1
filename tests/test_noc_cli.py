"""The NOC command line against a real daemon handling emulated calls.

One rig per module: emulated FreeSWITCH (callctl.sim) → daemon (outbound ESL, control link,
HTTP control endpoint, heartbeats) → real Vosk, real espeak, real Redis. Each command runs as
``python -m callctl …`` in a subprocess (the real entry point, monkey-patched like in
production) while this process keeps serving the daemon; the waits go through
``gevent.subprocess`` so the hub never blocks.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.subprocess
import pytest
from nockit import (
    CALLER,
    DID,
    DOWN_REASONS,
    NODE,
    NocRig,
    env,
    run_cli,
    wait_for,
    write_config,
)
from testkit import REPO, free_port

from callctl.noc import (
    HANGUP_CAUSES,
    NocError,
    call_row,
    check_cause,
    check_destination,
    fmt_duration,
    render_calls,
    render_turn,
    table,
    turn_view,
)
from callctl.sim import callers
from callctl.store import CallRecord, TurnRecord


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, redis_url: str,
        vosk_engine: Any) -> Iterator[NocRig]:
    r = NocRig(tmp_path_factory.mktemp("noc"), redis_url, vosk_engine)
    yield r
    r.close()


# ------------------------------------------------------------------------------------------
# Against the daemon
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_status_reports_daemon_esl_redis_models_capacity_and_nodes(rig: NocRig) -> None:
    call = rig.call()
    try:
        res = rig.cli("status", "--json")
        assert res.code == 0, res.err
        st = res.json()
        assert st["ok"] is True
        d = st["daemon"]
        assert d["alive"] and d["ready"] and d["url"] == f"http://127.0.0.1:{rig.http_port}"
        assert {"esl_control", "accepting_calls", "voice"} <= set(d["checks"])
        assert st["esl"]["connected"] is True
        assert st["store"]["reachable"] and st["store"]["daemon_store_up"] is True
        assert st["store"]["queue_depth"] is not None and st["store"]["active_calls"] >= 1
        assert st["models"] == {"asr": "vosk", "tts": "espeak", "loaded": True}
        assert st["capacity"] == {"node": NODE, "calls": 1, "max_calls": 7}
        node = next(n for n in st["nodes"] if n["node"] == NODE)
        assert node["control_url"] == f"http://127.0.0.1:{rig.http_port}"
        assert node["max_calls"] == 7 and node["ready"] is True
        assert 0 <= node["age_s"] < 3.0

        text = rig.cli("status")
        assert text.code == 0, text.err
        assert "ready (esl_control ok" in text.out and "1 / 7 calls on noc-node-1" in text.out
        assert NODE in text.out and "connected" in text.out
    finally:
        call.hangup()
        call.wait_hangup(10)


@pytest.mark.slow
def test_calls_and_show_list_live_calls_of_every_node_and_follow_to_the_end(
        rig: NocRig) -> None:
    call = rig.call(callers.wait_for_bot(silence_s=0.6),
                    callers.say("I would like to talk to billing please.", voice="espeak"),
                    callers.wait_for_bot(silence_s=0.6), callers.pause(60))
    # A call another node drives (no control endpoint of its own): listed from Redis alone.
    other = CallRecord(uuid="other-node-call-1", node="noc-node-2", state="listening",
                       caller="+15550009999", did=DID, route="front_desk",
                       started_at=time.time() - 65, answered_at=time.time() - 64)
    rig.store.call_started(other)
    try:
        turns = wait_for("a turn in Redis", lambda: rig.store.get_turns(call.uuid), 40)
        assert rig.store.flush(5)
        res = rig.cli("calls", "--json")
        assert res.code == 0, res.err
        rows = {r["uuid"]: r for r in res.json()["calls"]}
        mine, theirs = rows[call.uuid], rows[other.uuid]
        assert mine["node"] == NODE and mine["route"] == "front_desk"
        assert mine["state_source"] == "daemon" and mine["state"] in (
            "listening", "thinking", "speaking")
        assert mine["turns"] >= 1 and mine["last_turn_latency_ms"] > 0
        assert mine["caller"] == "********4321"
        assert theirs["node"] == "noc-node-2" and theirs["state"] == "listening"
        assert theirs["state_source"] == "redis" and theirs["duration_s"] >= 60

        table_out = rig.cli("calls")
        assert table_out.code == 0 and call.uuid in table_out.out
        row = next(ln.split() for ln in table_out.out.splitlines() if ln.startswith("other-"))
        assert row[1:4] == ["noc-node-2", "front_desk", "listening"] and row[4].startswith("1:")
        assert row[-1] == "********9999"
        assert CALLER not in table_out.out
        assert CALLER in rig.cli("calls", "--show-caller").out

        shown = rig.cli("show", call.uuid, "--json")
        assert shown.code == 0, shown.err
        body = shown.json()
        assert body["call"]["uuid"] == call.uuid and body["call"]["ended"] is False
        first = body["turns"][0]
        assert first["index"] == turns[0].index and first["latency_ms"] > 0
        assert first["reply"] and "dialog" in first["hops_ms"]
        text = rig.cli("show", call.uuid)
        assert call.uuid in text.out and "turn 1" in text.out and "bot:" in text.out

        def follow(*extra: str) -> Any:
            return gevent.subprocess.Popen(
                [sys.executable, "-m", "callctl", "show", call.uuid, "--follow", *extra,
                 "--config", str(rig.cli_cfg)],
                stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, env=env(),
                cwd=REPO)

        follower, stopped = follow("--interval", "0.2"), follow("--json", "--interval", "0.5")
        gevent.sleep(1.5)
        assert follower.poll() is None, "--follow must keep running while the call is up"
        stopped.send_signal(signal.SIGINT)                  # Ctrl-C: quiet exit 130
        out, err = stopped.communicate(timeout=10)
        assert stopped.returncode == 130 and b"Traceback" not in err, err.decode()
        records = [json.loads(ln) for ln in out.decode().splitlines()]
        assert records[0]["call"]["uuid"] == call.uuid and records[1]["turn"]["index"] == 1
        call.hangup()
        out, err = follower.communicate(timeout=20)
        assert follower.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert lines[0] == f"call      {call.uuid}"
        assert any(ln.startswith("turn 1") for ln in lines)
        assert lines[-1].startswith("call ended: NORMAL_CLEARING")
    finally:
        rig.store.call_ended(other)
        call.hangup()
        call.wait_hangup(10)


@pytest.mark.slow
def test_hangup_and_transfer_go_through_the_owning_daemon(rig: NocRig) -> None:
    call = rig.call(listening=True)
    res = rig.cli("hangup", call.uuid, "--cause", "call_rejected", "--json")
    assert res.code == 0, res.err
    assert res.json() | {"target": None} == {
        "uuid": call.uuid, "action": "hangup", "argument": "CALL_REJECTED", "node": NODE,
        "path": "daemon", "target": None, "fallback_reason": None}
    assert call.wait_hangup(10) == "CALL_REJECTED"
    wait_for("the call ended in Redis",
             lambda: (rec := rig.store.get_call(call.uuid)) is not None and rec.ended, 10)
    again = rig.cli("hangup", call.uuid)
    assert again.code == 1 and again.err.strip().endswith("already ended (CALL_REJECTED)")

    call = rig.call()
    res = rig.cli("transfer", call.uuid, "1000")
    try:
        assert res.code == 0, res.err
        assert res.out.strip().startswith(f"call {call.uuid} transferred to 1000 via the daemon")
        wait_for("the transfer", lambda: call.channel.profile.get("Destination-Number")
                 == "1000", 10)
        wait_for("the daemon to let go", lambda: rig.daemon.registry.get(call.uuid) is None, 10)
    finally:
        call.hangup()
        call.wait_hangup(10)


@pytest.mark.slow
def test_hangup_and_transfer_fall_back_to_freeswitch_when_the_daemon_http_is_down(
        rig: NocRig) -> None:
    hung, moved = rig.call(), rig.call()
    rig.daemon.http.stop(timeout=1)
    try:
        res = rig.cli("hangup", hung.uuid, "--cause", "USER_BUSY", "--json")
        assert res.code == 0, res.err
        body = res.json()
        assert body["path"] == "esl" and body["target"] == f"127.0.0.1:{rig.sw.esl_port}"
        # the last heartbeat still names the stopped endpoint, or (a beat later) none at all
        assert any(why in body["fallback_reason"] for why in DOWN_REASONS), body
        assert hung.wait_hangup(10) == "USER_BUSY"

        res = rig.cli("transfer", moved.uuid, "2000")
        assert res.code == 0, res.err
        assert "via FreeSWITCH ESL" in res.out and any(why in res.out for why in DOWN_REASONS)
        wait_for("the transfer", lambda: moved.channel.profile.get("Destination-Number")
                 == "2000", 10)
    finally:
        rig.daemon.http.start()
        moved.hangup()
        moved.wait_hangup(10)
        hung.wait_hangup(10)


# ------------------------------------------------------------------------------------------
# Errors: one line, exit status 1
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_unknown_uuid_and_bad_input_are_one_line_errors(rig: NocRig) -> None:
    for argv in (("show", "no-such-call"), ("hangup", "no-such-call"),
                 ("transfer", "no-such-call", "1000")):
        res = rig.cli(*argv)
        assert res.code == 1 and res.out == ""
        assert res.err.count("\n") == 1
        assert res.err.startswith(f"callctl {argv[0]}: unknown call uuid no-such-call")
    res = rig.cli("hangup", "some-call", "--cause", "BECAUSE")
    assert res.code == 1 and res.err.startswith("callctl hangup: unknown hangup cause 'BECAUSE'")
    assert "NORMAL_CLEARING" in res.err and res.err.count("\n") == 1
    res = rig.cli("transfer", "some-call", "1000\nXML")
    assert res.code == 1 and "bad transfer destination" in res.err


def test_redis_down_and_daemon_down_are_one_line_errors(tmp_path: Path) -> None:
    dead = free_port()
    cfg = write_config(tmp_path / "down.toml",
                       store={"redis_url": f"redis://:s3cret@127.0.0.1:{dead}/0"},
                       metrics={"listen_port": free_port()},
                       esl={"port": free_port()})
    for argv in (("calls",), ("show", "abc"), ("hangup", "abc"), ("transfer", "abc", "1")):
        res = run_cli(cfg, *argv)
        assert res.code == 1 and res.out == ""
        assert res.err.startswith(f"callctl {argv[0]}: Redis unreachable at "
                                  f"redis://:***@127.0.0.1:{dead}/0"), res.err
        assert res.err.count("\n") == 1 and "s3cret" not in res.err
    res = run_cli(cfg, "status")
    assert res.code == 1
    assert "DOWN: not running (connection refused at http://127.0.0.1:" in res.out
    assert "UNREACHABLE" in res.out and "s3cret" not in res.out
    st = run_cli(cfg, "status", "--json").json()
    assert st["ok"] is False and st["daemon"]["alive"] is False
    assert st["store"]["reachable"] is False

    no_redis = write_config(tmp_path / "memory.toml", store={"redis_url": ""})
    res = run_cli(no_redis, "calls")
    assert res.code == 1 and "store.redis_url is not set" in res.err


# ------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------


def test_causes_and_destinations_are_validated() -> None:
    assert check_cause(" normal_clearing ") == "NORMAL_CLEARING"
    assert HANGUP_CAUSES["MANAGER_REQUEST"] == 703
    with pytest.raises(NocError, match="unknown hangup cause"):
        check_cause("NORMAL CLEARING")
    assert check_destination("1000 XML default") == ["1000", "XML", "default"]
    assert check_destination("sip:agent@pbx.example:5060") == ["sip:agent@pbx.example:5060"]
    for bad in ("", "1000  XML", "a b c d", "1000;hangup", "x\ny", "1" * 129):
        with pytest.raises(NocError, match="bad transfer destination"):
            check_destination(bad)


def test_rows_and_tables() -> None:
    rec = CallRecord(uuid="u1", node="n1", state="answered", caller="+15551234567",
                     route="r1", started_at=1000.0, answered_at=1001.0)
    turns = [TurnRecord(1, "hi", "hello", latency_ms=412.0,
                        hops_ms={"dialog": 2.0, "endpoint": 300.0},
                        marks_ms={"speech_end": 3200.0}),
             TurnRecord(2, "", "", latency_ms=None)]
    row = call_row(rec, turns, now=1076.0, live_state="speaking")
    assert row["caller"] == "********4567" and row["state"] == "speaking"
    assert row["duration_s"] == 75.0 and row["last_turn_latency_ms"] == 412.0
    assert call_row(rec, turns, 1076.0, None, show_caller=True)["caller"] == "+15551234567"
    out = render_calls([row])
    assert out.splitlines()[1].split() == ["u1", "n1", "r1", "speaking", "1:15", "2", "412",
                                           "ms", "********4567"]
    assert render_calls([]) == "no live calls"
    assert fmt_duration(3725) == "1:02:05" and fmt_duration(None) == "-"
    assert table(["A", "BB"], [["xxx", None]]) == "A    BB\nxxx"
    text = render_turn(turn_view(turns[0]))
    assert text.splitlines() == ["turn 1      +3.2s  latency 412 ms  [endpoint 300 · dialog 2 ms]",
                                 "  caller: hi", "  bot:    hello"]
