"""A short real bench run: emulator (sped up: timing is not what this checks) + two real
daemon processes (callctl and the cloud-style baseline) + Vosk + espeak, 2 calls."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from callctl.bench import cli as bench_cli
from callctl.bench.plot import plot
from callctl.bench.report import summary_text, validate
from callctl.bench.runner import BenchConfig, run_bench


@pytest.mark.slow
def test_short_bench_run_gives_valid_report_and_plot(tmp_path: Path) -> None:
    bc = BenchConfig(calls=2, turns=2, asr="vosk", tts="espeak", speed=5.0,
                     caller_voice="espeak", warmup=False, spread_s=0.4)
    out = io.StringIO()
    report, samples = run_bench(bc, out)
    validate(report)
    # both pipelines answered the callers' turns, measured from the caller's side
    assert report["turn_latency_ms"]["n"] >= 2, out.getvalue()
    assert report["baseline"]["turn_latency_ms"]["n"] >= 2, out.getvalue()
    assert len(samples["callctl"]) == report["turn_latency_ms"]["n"]
    # the daemon's per-hop timeline came back from the child process
    assert {"endpoint", "asr_final", "dialog"} <= set(report["hops_ms"])
    assert report["cpu_s_per_call_min"] > 0 and report["peak_rss_mb"] > 0
    assert report["wer"] is not None and report["wer_samples"]
    assert report["config"]["calls"] == 2 and report["machine"]["nproc"] >= 1
    png = tmp_path / "bench.png"
    plot(report, samples, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "baseline" in summary_text(report)
    assert "done" in out.getvalue()          # the progress display ran


def test_cli_rejects_bad_options() -> None:
    import argparse

    p = argparse.ArgumentParser()
    bench_cli.add_arguments(p)
    for bad in (["--sweep", "0,5"], ["--sweep", "a"], ["--calls", "0"],
                ["--turns", "2", "--duration", "30"], ["--asr", "nope"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    args = p.parse_args(["--sweep", "10,1,5", "--calls", "3"])
    assert args.sweep == (1, 5, 10) and args.calls == 3
