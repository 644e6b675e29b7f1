"""The store as the daemon runs it: gevent monkey-patched, many calls, Redis restarted under
them. Runs in a child process because only the daemon's entry point may patch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r'''
from gevent import monkey; monkey.patch_all()
import dataclasses, json, subprocess, sys
import gevent
sys.path.insert(0, sys.argv[1])
from store_helpers import free_port, wait_port, new_call, store_config
from callctl.metrics import Metrics
from callctl.store import TurnRecord
from callctl.store.redis import RedisStore

port = free_port()
def redis_up():
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    wait_port(port)
    return p
server = redis_up()
store = RedisStore(store_config(f"redis://127.0.0.1:{port}/0", timeout_s=0.5), Metrics(),
                   retry_min_s=0.02, ping_interval_s=0.1)
store.start()
def call():
    rec = new_call("node-a")
    store.call_started(rec)
    for t in range(10):
        rec = dataclasses.replace(rec, turns=t + 1, flow_node=f"step{t}")
        store.add_turn(rec, TurnRecord(t, f"turn {t}"))
        gevent.sleep(0.04)
    store.call_ended(rec)
    return rec.uuid
calls = [gevent.spawn(call) for _ in range(20)]
gevent.sleep(0.15)
server.terminate(); server.wait()
gevent.sleep(0.3)
degraded = store.degraded
server = redis_up()
gevent.joinall(calls, timeout=20)
out = {"completed": sum(g.successful() for g in calls), "degraded_seen": degraded,
       "flushed": store.flush(10), "healthy": store.healthy, "lost": store.writer.lost,
       "active": len(store.active_calls()),
       "turns": sorted({len(store.get_turns(g.value)) for g in calls}),
       "ended": sum(1 for e in store.read_events(count=10000) if e.kind == "ended")}
store.close(1)
server.terminate()
print(json.dumps(out))
'''


def test_calls_ride_through_a_redis_restart_under_gevent() -> None:
    here = Path(__file__).parent
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(here)], capture_output=True,
                          text=True, timeout=60, cwd=here.parent.parent)
    if proc.returncode != 0:
        pytest.fail(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"completed": 20, "degraded_seen": True, "flushed": True, "healthy": True,
                      "lost": 0, "active": 0, "turns": [10], "ended": 20}
