"""``callctl run`` as a real process with a configuration that cannot run: a bad value, a
missing speech model (Vosk or Whisper), a Redis URL of the wrong scheme, a route to a flow
file that is not there. Each is one line on stderr naming the key or the path (never a
password), exit status 2 (config error) or 1 (cannot start), and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from testkit import REPO, free_port

FLOWS = REPO / "callctl" / "examples" / "flows"


def base(tmp_path: Path) -> str:
    return (f"[metrics]\nlisten_port = {free_port()}\n[esl]\nlisten_port = {free_port()}\n"
            f"[media]\nlisten_port = {free_port()}\n"
            f'[tts]\nengine = "espeak"\ncache_dir = "{tmp_path / "cache"}"\n'
            f'[playback]\ndir = "{tmp_path / "playback"}"\n[dialog]\nflows_dir = "{FLOWS}"\n')


ROUTE = '[[routes]]\ndid = "+15551230000"\nflow = "front_desk"\n'


def run(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callctl", "run", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("section,status,says", [
    ('[asr]\nengine = "vosk"\nmodel_path = "{tmp}/no-such-vosk-model"\n', 1,
     "{tmp}/no-such-vosk-model"),
    ('[asr]\nengine = "whisper"\nwhisper_model_path = "{tmp}/no-such-whisper"\n', 1,
     "{tmp}/no-such-whisper"),
    ('[asr]\nengine = "kaldi"\n', 2, "asr.engine: 'kaldi'"),
    ('[store]\nredis_url = "mysql://:s3cret@127.0.0.1/0"\n', 1,
     "store.redis_url 'mysql://:***@127.0.0.1/0'"),
])
def test_config_that_cannot_run_is_one_line_and_a_status(tmp_path: Path, section: str,
                                                         status: int, says: str) -> None:
    conf = tmp_path / "callctl.toml"
    conf.write_text(base(tmp_path) + section.format(tmp=tmp_path) + ROUTE)
    proc = run(conf)
    assert proc.returncode == status, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("callctl: ")]
    assert len(lines) == 1 and says.format(tmp=tmp_path) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "s3cret" not in proc.stderr


def test_route_to_a_missing_flow_file_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "callctl.toml"
    conf.write_text(base(tmp_path) + ROUTE.replace("front_desk", "no_such_flow"))
    proc = run(conf)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("callctl: cannot start")]
    assert len(lines) == 1 and "routes[0].flow" in lines[0], proc.stderr
    assert str(FLOWS / "no_such_flow.toml") in lines[0] and "Traceback" not in proc.stderr
