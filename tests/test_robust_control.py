"""Unknown call ids and bad requests on the control endpoints of a running daemon (HTTP port of
``Daemon.run()`` in this process, emulated FreeSWITCH, real Vosk, espeak, real Redis) while a
call is up: each gets a clear status and error, none touches the live call, which then takes
its turn and is hung up by its own uuid."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid as uuidlib
from pathlib import Path
from typing import Any

import gevent
import pytest
from resume_rig import DID, InProcDaemon, dial_keys, wait_for, wait_quiet

from callctl.sim.switch import Switch, SwitchConfig


def post(port: int, path: str, body: bytes) -> tuple[int, str]:
    """(status, ``error`` or the whole body) of a POST, in the hub's threadpool (the daemon
    serves HTTP on this very hub)."""
    def do() -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    status, raw = gevent.get_hub().threadpool.apply(do)
    try:
        return status, str(json.loads(raw).get("error", raw.decode()))
    except ValueError:
        return status, raw.decode(errors="replace")


#: (path with {uuid} for the live call, body, status, words of the error)
BAD = [
    ("/calls/no-such-call/hangup", b"{}", 404, "no live call no-such-call"),
    ("/calls/no-such-call/transfer", b'{"destination": "1000"}', 404, "no live call"),
    ("/calls/{uuid}/hangup", b'{"cause": "BECAUSE"}', 400, "hangup cause"),
    ("/calls/{uuid}/transfer", b'{"destination": "1000\\n\\napi hupall"}', 400, "destination"),
    ("/calls/{uuid}/hangup", b"\xff\xfe{not json", 400, "not JSON"),
    ("/calls/bad%20uuid/hangup", b"{}", 400, "uuid"),
    ("/calls/{uuid}/park", b"{}", 404, "no such path"),
]


@pytest.mark.slow
def test_unknown_call_ids_and_bad_requests_leave_the_live_call_alone(
        tmp_path: Path, redis_url: str, vosk_engine: Any) -> None:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0))
    sw.start()
    rig = InProcDaemon(sw, tmp_path, redis_url, vosk_engine, "node-a",
                       f"ctl{uuidlib.uuid4().hex[:8]}")
    try:
        assert rig.wait_ready()
        sw.cfg.dialplan[DID] = rig.socket_app       # type: ignore[index]
        call = sw.place_call(DID, "+15557654321", "PCMU")
        assert call.wait_answered(10) and wait_quiet(call, 1, 0.5, 20)
        port = rig.daemon.http.port
        for path, body, status, says in BAD:
            got = post(port, path.format(uuid=call.uuid), body)
            assert got[0] == status and says in got[1], (path, got)
        gevent.sleep(0.3)
        assert call.hangup_cause is None and rig.daemon.registry.get(call.uuid) is not None
        dial_keys(call, "12345678")                 # the live call takes its turn
        assert wait_quiet(call, 2, 0.5, 20), call.heard()
        assert post(port, f"/calls/{call.uuid}/hangup", b'{"cause": "CALL_REJECTED"}')[0] \
            == 200
        assert call.wait_hangup(10) == "CALL_REJECTED"
        assert wait_for(lambda: len(rig.daemon.registry) == 0, 10)
        assert post(port, f"/calls/{call.uuid}/hangup", b"{}") == \
            (404, f"no live call {call.uuid}")
    finally:
        rig.stop()
        sw.stop()
