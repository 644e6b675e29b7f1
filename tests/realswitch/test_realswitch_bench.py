"""``callctl bench --switch freeswitch`` against a real FreeSWITCH on callctl's own
freeswitch/conf (``fskit``): one call, a few turns, spoken by SIP phones; the report has
caller-side turn latencies, the daemon's hops (its turn records found by caller number) and
premature-reply counts per scenario. Nothing here asserts how fast anything was."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
from fskit import PASSWORD, FreeSwitch, need_switch
from testkit import free_port

from callctl.bench import cli as bench_cli
from callctl.bench.report import summary_text, validate
from callctl.bench.runner import BenchConfig, run_bench
from callctl.bench.switches import RealSwitchConfig


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory) -> FreeSwitch:
    need_switch()
    fs = FreeSwitch(tmp_path_factory.mktemp("fs"), free_port())
    fs.start()
    yield fs  # type: ignore[misc]
    fs.stop()


def _real(fs: FreeSwitch) -> RealSwitchConfig:
    return RealSwitchConfig(sip_host="127.0.0.1", sip_port=fs.sip_port,
                            esl_host="127.0.0.1", esl_port=fs.esl_port, esl_password=PASSWORD,
                            daemon_esl_port=fs.callctl_esl_port)


def test_bench_drives_a_real_switch_with_paused_utterances(switch: FreeSwitch) -> None:
    bc = BenchConfig(calls=1, turns=2, asr="vosk", tts="espeak", caller_voice="espeak",
                     baseline=False, warmup=False, spread_s=0.1, script="pauses",
                     switch="freeswitch", real=_real(switch))
    out = io.StringIO()
    report, samples = run_bench(bc, out)
    validate(report)
    assert report["turn_latency_ms"]["n"] >= 1, out.getvalue()
    assert len(samples["callctl"]) == report["turn_latency_ms"]["n"]
    # the daemon's turn records came back for the phone's call (uuid by caller number)
    assert report["turns"] and {"endpoint", "asr_final"} <= set(report["hops_ms"])
    assert report["daemon_turn_latency_ms"]["n"] >= 1
    pr, by = report["premature_replies"], report["premature_by_kind"]
    assert by["comma"]["n"] == 1 and by["pause"]["n"] == 1      # turn 0 and turn 1
    assert pr["n"] == sum(v["n"] for v in by.values())
    assert pr["hits"] == sum(v["hits"] for v in by.values())
    assert report["premature_into_pause_ms"]["n"] <= pr["hits"] == len(report["premature"])
    assert report["config"]["switch"] == "freeswitch"
    assert report["config"]["real"]["esl_password"] == "***"
    assert "premature" in summary_text(report) and "switch=freeswitch" in summary_text(report)


def test_bench_stops_early_on_a_wrong_password(switch: FreeSwitch) -> None:
    real = RealSwitchConfig(**{**_real(switch).__dict__, "esl_password": "wrong"})
    bc = BenchConfig(calls=1, turns=1, baseline=False, switch="freeswitch", real=real)
    with pytest.raises(RuntimeError, match="refused the password"):
        run_bench(bc, io.StringIO())


def test_cli_real_switch_options(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    bench_cli.add_arguments(p)
    cfg = tmp_path / "callctl.toml"
    cfg.write_text('[esl]\nhost = "127.0.0.2"\nport = 8022\npassword = "s3cret"\n'
                   "listen_port = 9040\n")
    args = p.parse_args(["--switch", "freeswitch", "--sip", "127.0.0.1:5080",
                         "--config", str(cfg), "--esl-port", "8023"])
    real = bench_cli.real_switch(args)
    assert (real.sip_host, real.sip_port, real.did) == ("127.0.0.1", 5080, "+15551230000")
    assert (real.esl_host, real.esl_port, real.esl_password, real.daemon_esl_port) == (
        "127.0.0.2", 8023, "s3cret", 9040)
    with pytest.raises(ValueError, match="--sip"):
        bench_cli.real_switch(p.parse_args(["--switch", "freeswitch"]))
    with pytest.raises(ValueError, match="real time"):
        bench_cli.real_switch(p.parse_args(["--switch", "freeswitch", "--sip", "h:1",
                                            "--speed", "2"]))
    for bad in (["--sip", "nohost"], ["--sip", "h:0"], ["--daemon-esl-port", "x"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
