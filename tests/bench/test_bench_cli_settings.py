"""``callctl bench --set section.key=value``: checked like the config file, applied to both
pipelines' daemons after the bench's own settings."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from callctl.bench.cli import _setting
from callctl.bench.runner import daemon_config


def test_values_are_read_as_toml_and_checked() -> None:
    assert _setting("turns.endpoint_silence_ms=150") == ("turns", "endpoint_silence_ms", 150)
    assert _setting("turns.bargein_pause = false") == ("turns", "bargein_pause", False)
    assert _setting("tts.engine=espeak") == ("tts", "engine", "espeak")   # bare word: string
    for bad, why in (("turns.endpoint_silence_ms=5", "endpoint_silence_ms"),
                     ("turns.no_such_key=1", "no_such_key"),
                     ("nosection.key=1", "nosection"),
                     ("endpoint_silence_ms=150", "section.key=value"),
                     ("turns.endpoint_silence_ms", "section.key=value")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            _setting(bad)


def test_the_daemons_get_the_changes_last(tmp_path: Path) -> None:
    spec = {"work": str(tmp_path), "asr": "vosk", "tts": "espeak", "switch_port": 1,
            "playback": "file", "max_calls": 10, "pool_size": 8,
            "settings": [["turns", "endpoint_silence_ms", 150], ["asr", "pool_size", 3],
                         ["turns", "bargein_pause", False]]}
    cfg = daemon_config(spec)
    assert cfg.turns.endpoint_silence_ms == 150 and cfg.turns.bargein_pause is False
    assert cfg.asr.pool_size == 3                    # beats the bench's own pool size
    assert cfg.routes[0].flow == "bench"             # the bench's settings are still there
    assert daemon_config({**spec, "settings": []}).turns.endpoint_silence_ms == 200
