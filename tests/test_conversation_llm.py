"""LLM-routed calls end to end: the reply streams sentence by sentence into TTS, tool calls
become call actions, a dead endpoint still gets the caller a spoken fallback. Each scenario
runs in its own monkey-patched process (as the daemon does) against a local server speaking
the OpenAI streaming format; see tests/conversation_llm_run.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from callctl.dialog.llm import FALLBACK_SORRY, FALLBACK_TRANSFER

RUN = Path(__file__).resolve().parent / "conversation_llm_run.py"


def run(scenario: str, redis_url: str, tmp_path: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(RUN), scenario, redis_url, str(tmp_path)],
                          capture_output=True, text=True, timeout=90)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    assert out["caller_error"] is None
    assert out["playback_files"] == []
    return out


@pytest.mark.slow
def test_first_sentence_is_heard_before_the_llm_stream_ends(redis_url: str,
                                                            tmp_path: Path) -> None:
    out = run("stream", redis_url, tmp_path)
    said = out["said"]
    assert said[0] == "Hello, how can I help you?"
    i = said.index("Sure, let me look that up for you.")
    assert said[i + 1] == "Your balance is ten dollars."
    # the caller heard the reply begin while the model was still writing it
    heard_after_greeting = out["heard"][1:]
    assert heard_after_greeting and heard_after_greeting[0]["start"] < out["done_at"][0]
    # the next request carries the whole first reply as history; its hangup tool ends the call
    assert {"role": "assistant", "content": "Sure, let me look that up for you. Your balance "
            "is ten dollars."} in out["requests"][1]
    assert out["cause"] == "NORMAL_CLEARING"


@pytest.mark.slow
def test_slow_llm_filler_then_transfer_tool_call(redis_url: str, tmp_path: Path) -> None:
    out = run("transfer", redis_url, tmp_path)
    # the model was slow: the filler filled the wait, then its sentence, then the transfer
    assert out["said"][1:] == ["One moment.", "Let me put you through to billing."]
    assert out["transfers"] == ["7005"]
    assert len(out["heard"]) >= 2


@pytest.mark.slow
def test_llm_down_gets_a_spoken_fallback_never_dead_air(redis_url: str, tmp_path: Path) -> None:
    out = run("down", redis_url, tmp_path)
    assert FALLBACK_SORRY in out["said"] and FALLBACK_TRANSFER in out["said"]
    assert out["transfers"] == ["7000"]                    # llm_fallback_transfer
    assert len(out["heard"]) >= 2
    assert not out["requests"]


@pytest.mark.slow
def test_speculative_request_is_reused_for_the_committed_turn(redis_url: str,
                                                              tmp_path: Path) -> None:
    out = run("speech", redis_url, tmp_path)
    asked = [m[-1]["content"] for m in out["requests"]]
    assert len(asked) == 1 and "balance" in asked[0].lower(), asked
    assert "Your balance is ten dollars." in out["said"]
    assert out["cause"] == "NORMAL_CLEARING"


@pytest.mark.slow
def test_key_over_a_streaming_reply_cuts_it_and_keeps_what_was_said(redis_url: str,
                                                                    tmp_path: Path) -> None:
    out = run("cut", redis_url, tmp_path)
    assert any(h["interrupted"] for h in out["heard"][1:]), out["heard"]
    assert len(out["requests"]) == 2, out["requests"]
    second = out["requests"][1]
    # the history has the part of the reply produced before the cut, then the key press
    said_before = [m["content"] for m in second if m["role"] == "assistant"]
    assert said_before[-1].startswith("We have many wonderful offers"), second
    assert "gold plan" not in said_before[-1]
    assert second[-1] == {"role": "user", "content": "(The caller keyed in: 5)"}
    assert out["said"][-1] == "Goodbye."
    assert out["cause"] == "NORMAL_CLEARING"
