"""A real Prometheus scrapes a real daemon handling emulated calls, and the key dashboard
queries answer with data: turn-latency percentiles and turns per second, the per-hop
breakdown, active calls by state, calls ended by outcome and by hangup cause.

tests/test_grafana_prometheus.py checks every expression against synthetic metrics; this test
closes the loop with the numbers the daemon itself produces (the NOC rig of nockit.py:
emulated FreeSWITCH, Vosk, espeak, Redis). Two callers, 3 s apart, each take a turn and hang
up while Prometheus scrapes every second; an expression counts once it has returned a finite
sample at any point (active calls exist only while the calls do).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gevent
import pytest
from nockit import NocRig, wait_for
from promkit import Prometheus, dashboard_exprs, has_finite_sample, needs_prometheus, substitute

from callctl.sim import callers
from callctl.sim.switch import SimCall

#: (panel title prefix in callctl-turn-latency.json) — the queries the NOC lives on.
KEY_PANELS = (
    "Turn latency p50 / p95 / p99",
    "Turns per second",
    "Per-hop p95",
    "Mean time per hop",
    "Active calls by state",
    "Calls ended by outcome",
    "Hangup causes",
)


def key_exprs() -> dict[str, str]:
    out = {where: substitute(expr) for where, expr in dashboard_exprs()
           if where.startswith("callctl-turn-latency.json: ")
           and where.split(": ", 1)[1].startswith(KEY_PANELS)}
    assert len(out) >= len(KEY_PANELS), out
    return out


def one_turn(rig: NocRig) -> SimCall:
    return rig.call(callers.wait_for_bot(silence_s=0.6),
                    callers.say("I would like to pay my bill.", voice="espeak"),
                    callers.wait_for_bot(silence_s=0.6),
                    callers.hangup())


@pytest.mark.slow
@needs_prometheus
def test_prometheus_scrapes_a_daemon_handling_calls(tmp_path: Path, redis_url: str,
                                                    vosk_engine: Any) -> None:
    rig = NocRig(tmp_path, redis_url, vosk_engine)
    prom = Prometheus(tmp_path, [f"127.0.0.1:{rig.http_port}"])
    calls: list[SimCall] = []
    try:
        prom.wait_ready(time.monotonic() + 20)
        # Prometheus must see the histograms before and after a turn: rate() needs an increase.
        wait_for("the first scrape", lambda: prom.query('up{job="callctl"} == 1'), 15)
        # The second caller's turn comes a few scrapes after the first one's, so every
        # histogram series exists before it grows.
        calls.append(one_turn(rig))
        gevent.sleep(3.0)
        calls.append(one_turn(rig))
        pending = key_exprs()
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            for where, expr in list(pending.items()):
                if has_finite_sample(prom.query(expr)):
                    del pending[where]
            gevent.sleep(0.5)
        assert not pending, "no data for:\n" + "\n".join(f"{w}: {e}" for w, e in pending.items())

        # The numbers are the daemon's own: its route, its hops, its calls.
        instance = f"127.0.0.1:{rig.http_port}"
        for c in calls:
            assert c.wait_hangup(30) == "NORMAL_CLEARING"
        wait_for("both calls counted", lambda: [
            r for r in prom.query(f'sum(callctl_calls_total{{instance="{instance}",'
                                  f'route="front_desk"}}) >= 2')], 15)
        turns = prom.query(f'callctl_turn_latency_seconds_count{{instance="{instance}"}}')
        assert [r["metric"]["route"] for r in turns] == ["front_desk"]
        assert float(turns[0]["value"][1]) >= 2
        hops = {r["metric"]["hop"] for r in prom.query("callctl_hop_seconds_count > 0")}
        # (endpoint and asr_final are in the stored turn records but not yet observed into
        # callctl_hop_seconds by the daemon: reported to the lead.)
        assert {"dialog", "tts_first_chunk", "playback_start", "play_out"} <= hops
        p95 = prom.query(substitute(dict(dashboard_exprs())[
            "callctl-turn-latency.json: Turn latency p50 / p95 / p99 (400 ms budget) [B]"]))
        assert 0 < float(p95[0]["value"][1]) < 10
    finally:
        for c in calls:
            c.hangup()
        prom.stop()
        rig.close()
