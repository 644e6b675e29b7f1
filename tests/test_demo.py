"""README command 1 stays true: `callctl demo` runs the emulated switch, the daemon and scripted
callers and exits 0 with a summary."""

from __future__ import annotations

import subprocess
import sys

import pytest
from testkit import REPO


@pytest.mark.slow
def test_demo_runs_and_every_call_ends_as_scripted() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "callctl", "demo", "--calls", "3", "--tts", "espeak",
         "--stagger", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "every call ended as its script expected" in out
    assert 'caller says: "I would like to talk to billing please."' in out
    assert "turn latency" in out
