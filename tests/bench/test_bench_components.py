"""callctl.bench.components: tiny runs of each subcommand; structure and sanity, never speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from callctl.bench import components
from callctl.sim.corpus import STANDARD_UTTERANCES, utterance


@pytest.mark.slow
def test_listen_one_call_commits_the_turn(vosk_engine: Any) -> None:
    utts = [utterance(STANDARD_UTTERANCES["billing"])]
    for fresh in (False, True):
        r = components.run_listen(vosk_engine, 1, utts, fresh=fresh, gap_s=1.0, speed=4.0)
        assert r.mode == ("fresh" if fresh else "pooled")
        assert (r.calls, r.utterances_per_call, r.turns, r.missing_turns) == (1, 1, 1, 0)
        assert r.endpoint_ms_p50 is not None and r.endpoint_ms_p50 > 0
        assert r.final_ms_p50 is not None and r.final_ms_p50 > 0
        # the speculative final comes at speech end, the commit no earlier
        assert r.final_ms_p50 <= r.endpoint_ms_p50
        assert sum(r.reasons.values()) == 1
        assert r.cpu_s > 0 and r.cpu_s_per_call_minute > 0 and r.wall_s > 0
    # pooled recognizers went back to the pool
    assert vosk_engine.acquire() is not None


@pytest.mark.slow
def test_vosk_cpu_fresh_and_pooled_rows(vosk_engine: Any) -> None:
    rows = components.run_vosk_cpu(vosk_engine, [utterance(STANDARD_UTTERANCES["yes"])], 1)
    assert [r.mode for r in rows] == ["fresh", "pooled"]
    for r in rows:
        assert r.utterances == 1
        assert r.cpu_per_utt_ms_p50 > 0 and r.cpu_per_speech_s > 0
        assert 0 <= r.final_ms_p50 <= r.cpu_per_utt_ms_p50


def test_whisper_wer_cli_writes_json(tmp_path: Path) -> None:
    out: list[str] = []
    path = tmp_path / "wer.json"
    rc = components.main(["whisper-wer", "--utterances", "1", "--codec", "PCMU",
                          "--json", str(path)], out.append)
    assert rc == 0
    assert out[0].splitlines()[0].split() == list(components.WHISPER_COLUMNS)
    data = json.loads(path.read_text())
    assert data["command"] == "whisper-wer" and data["nproc"] >= 1
    assert len(data["loadavg"]) == 3
    [row] = data["results"]
    assert row["codec"] == "PCMU" and row["utterances"] == 1
    assert 0.0 <= row["wer"] <= 1.0 and row["decode_ms_p50"] > 0
    assert row["wer"] == 0.0 or row["mismatches"]


@pytest.mark.parametrize("argv", [
    ["listen", "--calls", "0"],
    ["listen", "--utterances", "99"],
    ["vosk-cpu", "--rounds", "x"],
    ["whisper-wer", "--codec", "G729"],
    ["listen", "--speed", "0"],
])
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = components.main(argv, lambda _s: None)
    except SystemExit as e:   # argparse rejects before anything runs
        rc = int(e.code or 0)
    assert rc == 2
    assert "error" in capsys.readouterr().err


def test_run_listen_rejects_nonsense(vosk_engine: Any) -> None:
    with pytest.raises(ValueError):
        components.run_listen(vosk_engine, 0, [utterance(STANDARD_UTTERANCES["yes"])])
    with pytest.raises(ValueError):
        components.run_listen(vosk_engine, 1, [])
