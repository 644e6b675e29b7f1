"""``callctl sim serve`` / ``callctl sim call`` as real processes, and the config file checks."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import free_port

from callctl.sim.cli import SimConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"esl_host": None, "esl_port": None, "esl_password": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_config_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "sim.toml"
    f.write_text('[esl]\nport = 9000\npassword = "pw"\n[switch]\nspeed = 2\nevent_delay_s = 0\n'
                 '[dialplan]\n"5000" = "socket 127.0.0.1:8040 async full"\n"5001" = "park"\n')
    cfg = load_config(str(f), _args(esl_port=9001))
    assert (cfg.esl_port, cfg.password, cfg.speed, cfg.event_delay_s) == (9001, "pw", 2.0, 0.0)
    assert cfg.dialplan == {"5000": "socket 127.0.0.1:8040 async full", "5001": "park"}
    assert load_config(None, _args()).esl_port == 8021


@pytest.mark.parametrize("text,key", [
    ('[switch]\nspeed = "fast"\n', "switch.speed"),
    ("[switch]\nspeed = 0\n", "switch.speed"),
    ("[switch]\nbogus = 1\n", "switch.bogus"),
    ('[dialplan]\n"1" = "bridge x"\n', "dialplan.1"),
    ("[nope]\n", "unknown section"),
    ("[esl]\nport = 70000\n", "esl.port"),
    ("not toml = = =\n", "sim.toml"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "sim.toml"
    f.write_text(text)
    with pytest.raises(SimConfigError, match=key.replace(".", r"\.")):
        load_config(str(f), _args())


def test_serve_call_and_sigterm(tmp_path: Path) -> None:
    port = free_port()
    f = tmp_path / "sim.toml"
    f.write_text(f'[esl]\nport = {port}\n[dialplan]\n"5001" = "park"\n')
    serve = subprocess.Popen([sys.executable, "-m", "callctl", "sim", "serve", "--config",
                              str(f)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             cwd=REPO, text=True)
    try:
        assert serve.stdout is not None
        for _ in range(50):
            line = serve.stdout.readline()
            if "FreeSWITCH emulator on" in line or not line:
                break
        assert f"127.0.0.1:{port}" in line
        call = subprocess.run([sys.executable, "-m", "callctl", "sim", "call", "--did", "5001",
                               "--esl-port", str(port), "--hangup-after", "0.2"],
                              capture_output=True, text=True, timeout=30, cwd=REPO)
        assert call.returncode == 0, call.stderr
        first, second = call.stdout.split("\n")[:2]
        assert first.startswith("+OK ") and second == "+OK"
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=15) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
