"""`callctl run` as a REAL process against the emulated switch: READY/WATCHDOG/STOPPING over
$NOTIFY_SOCKET, SIGHUP reload, a call end to end, drain on SIGTERM with a call in progress,
exit 0, and the NOC log lines (JSON, call uuid, caller masked)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import gevent
import gevent.socket
import numpy as np
import pytest
from testkit import REPO, free_port

from callctl.config import Config, DaemonConfig, EslConfig, RouteConfig, RoutingConfig
from callctl.daemon import SdNotify, reload_config
from callctl.sim.switch import Switch, SwitchConfig

DID = "+15551230000"


def write_wav(path: Path, seconds: float) -> Path:
    pcm = (np.sin(np.arange(int(8000 * seconds)) * 0.3) * 6000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    return path


class Notifications:
    """A $NOTIFY_SOCKET we read, like systemd would."""

    def __init__(self, path: Path) -> None:
        self.sock = gevent.socket.socket(gevent.socket.AF_UNIX, gevent.socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.lines: list[str] = []
        self.g = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            self.lines.extend(self.sock.recv(4096).decode().split("\n"))

    def wait_for(self, line: str, timeout: float) -> bool:
        with gevent.Timeout(timeout, False):
            while line not in self.lines:
                gevent.sleep(0.02)
        return line in self.lines

    def close(self) -> None:
        self.g.kill()
        self.sock.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Switch, Path, int]]:
    esl_port = free_port()
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0, speed=4.0,
                             dialplan={DID: f"socket 127.0.0.1:{esl_port} async full"}))
    sw.start()
    greeting = write_wav(tmp_path / "hello.wav", 0.3)
    cfg = tmp_path / "callctl.toml"
    cfg.write_text(f"""
[daemon]
max_calls = 4
drain_timeout_s = 1.0
[esl]
listen_port = {esl_port}
port = {sw.esl_port}
password = "ClueCon"
command_timeout_s = 2.0
linger_s = 3
reconnect_max_s = 1.0
[metrics]
listen_port = {free_port()}
[media]
listen_port = {free_port()}
[asr]
engine = "vosk"
pool_size = 1
[tts]
engine = "espeak"
cache_dir = "{tmp_path / 'prompts'}"
[playback]
dir = "{tmp_path / 'playback'}"
[dialog]
flows_dir = "{REPO / 'callctl' / 'examples' / 'flows'}"
[log]
format = "json"
level = "info"
[[routes]]
did = "{DID}"
flow = "front_desk"
greeting = "{greeting}"
""")
    yield sw, cfg, esl_port
    sw.stop()


def test_sigterm_drains_call_in_progress_and_exits_0(setup: tuple[Switch, Path, int],
                                                     tmp_path: Path) -> None:
    sw, cfg, _ = setup
    notes = Notifications(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(notes.path), WATCHDOG_USEC="400000",
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "callctl", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        assert notes.wait_for("READY=1", 20), (notes.lines, proc.poll())
        assert notes.wait_for("WATCHDOG=1", 2)
        cfg.write_text(cfg.read_text().replace("max_calls = 4", "max_calls = 3"))
        proc.send_signal(signal.SIGHUP)
        assert notes.wait_for("STATUS=reloaded: 1 change(s) applied, 0 need a restart", 5)
        call = sw.place_call(DID, "+15557654321", "PCMU")
        assert call.wait_answered(5)
        gevent.sleep(0.5)       # the greeting plays
        proc.send_signal(signal.SIGTERM)
        assert notes.wait_for("STOPPING=1", 5)
        assert call.wait_hangup(10) == "NORMAL_CLEARING"   # hung up after drain_timeout_s
        rc = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=5)
        notes.close()
    assert rc == 0, err.decode()[-2000:]
    assert call.heard() and call.heard()[0].source.endswith("hello.wav")
    logs = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    by_event = {e["event"]: e for e in logs}
    for name in ("call.start", "call.answer", "call.end", "daemon.ready", "daemon.drain"):
        assert name in by_event, name
    start, end = by_event["call.start"], by_event["call.end"]
    assert start["call_uuid"] == call.uuid == end["call_uuid"]
    assert start["caller"].endswith("*4321") and "7654321" not in out.decode()
    assert end["cause"] == "NORMAL_CLEARING" and end["duration_s"] >= 1.0
    assert by_event["daemon.reloaded"]["changed"] == ["daemon.max_calls"]
    phases = [e.get("phase") for e in logs if e["event"] == "daemon.drain"]
    assert phases == ["stop_taking_calls", "hang_up_rest", "close"]


def test_sd_notify_abstract_and_watchdog_parsing(tmp_path: Path) -> None:
    n = SdNotify({"NOTIFY_SOCKET": "@callctl-test", "WATCHDOG_USEC": "10000000"})
    assert n.address == "\0callctl-test" and n.watchdog_interval == 5.0
    assert SdNotify({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    off = SdNotify({})
    assert not off.enabled and not off.send("READY=1")
    notes = Notifications(tmp_path / "n.sock")
    assert SdNotify({"NOTIFY_SOCKET": str(notes.path)}).send("READY=1", "STATUS=x")
    assert notes.wait_for("STATUS=x", 2)
    notes.close()


def test_reload_applies_routes_and_limits_only() -> None:
    old = Config(routes=(RouteConfig(did="1", flow="a"),))
    new = Config(daemon=DaemonConfig(max_calls=7, work_dir="/elsewhere"),
                 esl=EslConfig(listen_port=9999),
                 routing=RoutingConfig(unknown_action="default"),
                 routes=(RouteConfig(did="2", flow="b"),))
    merged, changed, restart = reload_config(old, new)
    assert merged.daemon.max_calls == 7 and merged.routes == new.routes
    assert merged.routing.unknown_action == "default"
    assert merged.esl.listen_port == old.esl.listen_port
    assert merged.daemon.work_dir == old.daemon.work_dir
    assert set(changed) == {"routes", "daemon.max_calls", "routing.unknown_action"}
    assert set(restart) == {"esl.listen_port", "daemon.work_dir"}
