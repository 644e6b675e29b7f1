"""``python -m callctl.tts.bench`` runs and reports the figures BENCHMARKS.md quotes."""

from __future__ import annotations

import json

import pytest

from callctl.tts.bench import main


def test_bench_reports_ttfc_and_rtf(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--engines", "espeak,flite", "--repeat", "1", "--rate", "16000"]) == 0
    text = capsys.readouterr().out  # log lines of other greenlets may surround the JSON
    out, _end = json.JSONDecoder().raw_decode(text[text.index('{\n  "rate"'):])
    assert out["rate"] == 16000
    for engine in ("espeak", "flite"):
        fig = out[engine]
        assert fig["samples"] == 5
        assert 0 < fig["ttfc_ms_p50"] <= fig["ttfc_ms_p95"]
        assert 0 < fig["rtf_p50"] <= fig["rtf_p95"] and fig["cache_hit_ms_p50"] > 0


def test_bench_rejects_unknown_engine() -> None:
    assert main(["--engines", "festival"]) == 2
