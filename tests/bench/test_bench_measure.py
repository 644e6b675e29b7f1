"""The benchmark's measuring code on synthetic timelines with known answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from callctl.bench.measure import (
    Spoken,
    bargein_latencies,
    false_bargein_rate,
    percentile,
    summarize,
    turn_latencies,
    word_error_rate,
)
from callctl.sim.interfaces import Heard


def test_percentiles_known_values() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 95) == pytest.approx(95.05)
    assert percentile([], 50) is None
    s = summarize([0.2, 0.4])
    assert s.as_ms() == {"p50": 300.0, "p95": 390.0, "p99": 398.0, "n": 2}


def test_turn_latency_is_first_reply_after_speech_end() -> None:
    spoken = [Spoken(1.0, 2.0, "utterance"), Spoken(5.0, 6.0, "utterance"),
              Spoken(20.0, 21.0, "utterance")]
    heard = [Heard(0.1, 0.9, "greet.wav", False), Heard(2.25, 3.0, "a.wav", False),
             Heard(6.4, 7.0, "b.wav", False), Heard(40.0, 41.0, "late.wav", False)]
    lat, missed = turn_latencies(spoken, heard, reply_window=5.0)
    assert lat == pytest.approx([0.25, 0.4])
    assert missed == 1


def test_turn_reply_must_start_before_the_next_utterance() -> None:
    spoken = [Spoken(1.0, 2.0, "utterance"), Spoken(3.0, 4.0, "utterance")]
    heard = [Heard(4.3, 5.0, "b.wav", False)]          # the bot never answered the first
    lat, missed = turn_latencies(spoken, heard, reply_window=10.0)
    assert lat == pytest.approx([0.3]) and missed == 1


def test_bargein_latency_and_ignored() -> None:
    spoken = [Spoken(2.5, 3.5, "bargein"), Spoken(10.2, 11.0, "bargein"),
              Spoken(30.0, 31.0, "bargein")]
    heard = [Heard(2.0, 2.7, "a.wav", True), Heard(10.0, 12.0, "b.wav", False)]
    lat, ignored = bargein_latencies(spoken, heard)
    assert lat == pytest.approx([0.2])
    assert ignored == 1


def test_false_bargein_rate() -> None:
    spoken = [Spoken(1.0, 1.3, "backchannel", "mhm"), Spoken(5.0, 5.3, "backchannel", "yeah"),
              Spoken(9.0, 9.2, "noise")]
    heard = [Heard(0.5, 1.2, "a.wav", True), Heard(4.0, 8.0, "b.wav", False)]
    rate, n = false_bargein_rate(spoken, heard)
    assert n == 2
    assert rate == pytest.approx(0.5)


def test_false_bargeins_split_backchannels_and_noise() -> None:
    from callctl.bench.measure import false_bargeins

    spoken = [Spoken(1.0, 1.3, "backchannel", "mhm"),     # cut the bot 0.2 s later: hit
              Spoken(5.0, 5.3, "noise", "[noise:thump]"),  # bot talked on
              Spoken(9.0, 9.4, "noise", "[noise:cough]"),  # cut the bot: hit
              Spoken(12.0, 12.2, "noise", "[noise:hiss]"),  # bot cut 2 s after it: not this
              Spoken(20.0, 20.3, "noise", "[noise:clicks]"),  # no bot audio: not counted
              Spoken(9.1, 9.2, "bargein", "wait")]         # not a false barge-in kind
    heard = [Heard(0.5, 1.2, "a.wav", True), Heard(4.0, 8.0, "b.wav", False),
             Heard(8.5, 9.5, "stream", True), Heard(11.0, 14.3, "c.wav", True)]
    assert false_bargeins(spoken, heard) == {"backchannel": (1, 1), "noise": (1, 3)}
    rate, n = false_bargein_rate(spoken, heard)
    assert (rate, n) == (pytest.approx(0.5), 4)
    assert false_bargeins([], heard) == {"backchannel": (0, 0), "noise": (0, 0)}


def test_stream_stretches_a_few_frames_apart_are_one_reply() -> None:
    """A streamed reply that underran twice (gaps of 0.1 s) and was then killed: the
    barge-in over its middle and the noise over its second piece are measured against
    the whole reply; a new reply after the kill, and file audio, stay apart."""
    from callctl.sim.callers import join_stream

    heard = [Heard(1.0, 2.0, "stream", False), Heard(2.1, 2.5, "stream", False),
             Heard(2.6, 3.2, "stream", True),       # killAudio: the reply ends here
             Heard(3.3, 4.0, "stream", False),      # the next reply, 0.1 s after the kill
             Heard(4.05, 4.5, "a.wav", False), Heard(5.0, 6.0, "stream", False)]
    joined = join_stream(heard, 0.25)
    assert joined == [Heard(1.0, 3.2, "stream", True), Heard(3.3, 4.0, "stream", False),
                      Heard(4.05, 4.5, "a.wav", False), Heard(5.0, 6.0, "stream", False)]
    spoken = [Spoken(2.05, 3.0, "bargein", "wait"), Spoken(2.55, 2.8, "noise")]
    assert bargein_latencies(spoken, heard) == ([], 0)          # in a gap: nothing playing
    lat, ignored = bargein_latencies(spoken, joined)
    assert lat == pytest.approx([3.2 - 2.05]) and ignored == 0
    rate, n = false_bargein_rate(spoken, joined)
    assert (rate, n) == (1.0, 1)
    assert join_stream(heard, 0.05) == heard                    # gaps longer than allowed


def test_wer() -> None:
    assert word_error_rate(["talk to billing"], ["talk to billing"]) == 0.0
    assert word_error_rate(["talk to billing"], ["talk to"]) == pytest.approx(1 / 3)
    assert word_error_rate([""], ["x"]) is None


def _lat(p50: float | None, n: int) -> dict[str, float | int | None]:
    return {"p50": p50, "p95": p50, "p99": p50, "n": n}


def _pipeline() -> dict[str, object]:
    return {"turn_latency_ms": _lat(250.0, 4), "bargein_ms": _lat(None, 0),
            "answer_to_first_audio_ms": _lat(80.0, 1), "hops_ms": {"asr_final": _lat(20.0, 4)},
            "false_bargein_rate": 0.25,
            "false_bargein": {"backchannel": {"rate": 0.0, "hits": 0, "n": 2},
                              "noise": {"rate": 0.5, "hits": 1, "n": 2}},
            "wer": 0.1, "cpu_s_per_call_min": 3.0}


def test_report_schema_accepts_good_and_names_bad(tmp_path: Path) -> None:
    from callctl.bench.plot import plot
    from callctl.bench.report import ReportError, summary_text, validate

    report = {**_pipeline(), "baseline": _pipeline(), "config": {"calls": 2},
              "machine": {"cores": 2}, "sweep": [{"calls": 1, "turn_latency_ms": _lat(200, 3)}]}
    validate(report)
    assert "turn latency" in summary_text(report)
    bad = {**report, "bargein_ms": _lat(None, 3)}
    with pytest.raises(ReportError, match=r"bargein_ms\.p50: null with n=3"):
        validate(bad)
    with pytest.raises(ReportError, match="baseline: missing"):
        validate({k: v for k, v in report.items() if k != "baseline"})
    assert "noise 1/2" in summary_text(report)
    fb = report["false_bargein"]
    assert isinstance(fb, dict)
    for bad_fb, where in (({"backchannel": fb["backchannel"]}, r"false_bargein: must"),
                          ({**fb, "noise": {"rate": 0.5, "hits": 3, "n": 2}},
                           r"false_bargein\.noise: hits"),
                          ({**fb, "noise": {"rate": 1.5, "hits": 1, "n": 2}},
                           r"false_bargein\.noise\.rate"),
                          ({**fb, "noise": {"rate": 0.5, "n": 2}}, r"false_bargein\.noise: must")):
        with pytest.raises(ReportError, match=where):
            validate({**report, "baseline": {**_pipeline(), "false_bargein": bad_fb}})
    out = tmp_path / "p.png"
    plot(report, {"callctl": [0.2, 0.3], "baseline": [1.0, 1.2]}, out)
    assert out.read_bytes().startswith(b"\x89PNG")


def test_hop_samples_and_cpu_per_call_minute() -> None:
    from callctl.bench.measure import cpu_per_call_minute, hop_samples

    hops = hop_samples([{"endpoint": 200.0, "dialog": 4.0}, {"endpoint": 300.0}, {}])
    assert hops == {"endpoint": [0.2, 0.3], "dialog": [0.004]}
    assert list(hops) == ["endpoint", "dialog"]
    assert cpu_per_call_minute(6.0, 120.0) == pytest.approx(3.0)   # 6 s CPU over 2 call-min
    assert cpu_per_call_minute(6.0, 0.0) == 0.0


def test_transcripts_paired_by_speech_time() -> None:
    from callctl.bench.measure import match_transcripts

    spoken = [Spoken(1.0, 3.0, "utterance", "change my address"),
              Spoken(4.0, 4.3, "backchannel", "mhm"),
              Spoken(10.0, 12.0, "bargein", "wait one more question"),
              Spoken(20.0, 22.0, "utterance", "never heard")]
    turns = [(1.1, "change my dress"), (4.05, "hmm"), (9.8, "wait one more question"),
             (30.0, "stray")]
    pairs = match_transcripts(spoken, turns)
    assert pairs == [("change my address", "change my dress"),
                     ("wait one more question", "wait one more question"),
                     ("never heard", "")]
    assert word_error_rate([p[0] for p in pairs], [p[1] for p in pairs]) == pytest.approx(
        (1 + 0 + 2) / 9)


def test_max_calls_within_budget_stops_at_first_level_over() -> None:
    from callctl.bench.measure import max_calls_within_budget

    rows = [(20, 0.45), (1, 0.2), (5, 0.3), (10, 0.39), (40, 0.35)]
    assert max_calls_within_budget(rows, 0.4) == 10      # 40 is under again, but 20 failed
    assert max_calls_within_budget([(1, 0.5)], 0.4) is None
    assert max_calls_within_budget([(1, 0.1), (5, None)], 0.4) == 1
    assert max_calls_within_budget([], 0.4) is None


def test_bench_script_kinds_and_flow() -> None:
    """The scripted caller: each speech step has its kind, barge-ins follow a reply."""
    from callctl.bench.runner import BENCH_FLOW, script
    from callctl.sim import callers

    steps, kinds = script(0, 6, lambda text: text)
    said = [kinds[i] for i in sorted(kinds)]
    assert said.count("utterance") == 4 and said.count("bargein") == 2
    assert said.count("backchannel") == 2                 # greeting + turn 0
    assert said.count("noise") == 1                       # turn 3 (caller 1: turn 0)
    noise = steps[next(i for i, k in kinds.items() if k == "noise")]
    assert isinstance(noise, callers.BargeIn) and not isinstance(noise.what, str)
    assert noise.what.text.startswith("[noise:")
    first, _ = script(1, 1, lambda text: text)
    again, kinds1 = script(1, 1, lambda text: text)
    assert [kinds1[i] for i in sorted(kinds1)] == ["backchannel", "utterance", "noise"]
    a, b = (s[next(i for i, k in kinds1.items() if k == "noise")] for s in (first, again))
    assert isinstance(a, callers.BargeIn) and isinstance(b, callers.BargeIn)
    assert not isinstance(a.what, str) and not isinstance(b.what, str)
    assert (a.what.samples == b.what.samples).all()      # deterministic per caller and turn
    for i, kind in kinds.items():
        step = steps[i]
        assert isinstance(step, callers.BargeIn if kind != "utterance" else callers.Say)
        if kind == "bargein":                             # talks over the reply to a say()
            assert isinstance(steps[i - 2], callers.Say) or isinstance(steps[i - 1],
                                                                        callers.Say)
    assert isinstance(steps[0], callers.WaitAnswer)
    assert any(isinstance(s, callers.Dtmf) and s.digits == "9" for s in steps)
    import tomllib

    flow = tomllib.loads(BENCH_FLOW)
    assert flow["nodes"]["ask"]["intents"]["done"]["dtmf"] == "9"


def test_proc_figures_of_this_process() -> None:
    import os

    from callctl.bench.runner import proc_cpu_s, proc_peak_rss_mb, system_busy_s

    sum(i * i for i in range(200_000))                   # burn a little CPU
    assert proc_cpu_s(os.getpid()) > 0
    assert proc_peak_rss_mb(os.getpid()) > 10
    assert system_busy_s() >= proc_cpu_s(os.getpid())
