"""A short real bench run: emulator (sped up: timing is not what this checks) + two real
daemon processes (callctl and the cloud-style baseline) + Vosk + espeak, 2 calls; and one
call with streamed playback (real time: the daemon paces the stream in real time)."""

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
    # a backchannel (caller 0) and a noise burst (caller 1) went over the bot's reply
    fb = report["false_bargein"]
    assert fb["backchannel"]["n"] >= 1 and fb["noise"]["n"] >= 1, fb
    hits, n = (sum(v[k] for v in fb.values()) for k in ("hits", "n"))
    assert report["false_bargein_rate"] == pytest.approx(hits / n, abs=1e-4)
    assert report["backchannels_over_bot"] == fb["backchannel"]["n"]
    png = tmp_path / "bench.png"
    plot(report, samples, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "baseline" in summary_text(report) and "noise" in summary_text(report)
    assert "done" in out.getvalue()          # the progress display ran


@pytest.mark.slow
def test_stream_playback_bench_measures_talk_over_the_bot() -> None:
    """With ``--playback stream`` the callers find the streamed reply to talk over (their
    ``BargeIn`` steps wait on the joined stream) and the report counts them."""
    bc = BenchConfig(calls=1, turns=1, asr="vosk", tts="espeak", playback="stream",
                     caller_voice="espeak", warmup=False, spread_s=0.1, baseline=False)
    out = io.StringIO()
    report, _ = run_bench(bc, out)
    validate(report)
    assert report["config"]["playback"] == "stream"
    assert report["turn_latency_ms"]["n"] >= 1, out.getvalue()
    assert report["failed_script_steps"] == 0, out.getvalue()   # every BargeIn found the bot
    assert report["false_bargein"]["backchannel"]["n"] == 2     # greeting + the reply


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
