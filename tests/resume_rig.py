"""Helpers for the tests/test_resume_*.py files: a daemon config with the account flow, a
real daemon process, and waiting on what the emulated caller hears."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import numpy as np
from prometheus_client import CollectorRegistry
from testkit import REPO, free_port

from callctl import config
from callctl.daemon import Daemon
from callctl.metrics import Metrics
from callctl.sim.switch import SimCall, Switch
from callctl.store import open_store
from callctl.voice import Voice

DID = "+15551230000"


def write_tone(path: Path, seconds: float) -> Path:
    """A WAV tone (the emulated switch's hold prompt)."""
    pcm = (np.sin(np.arange(int(8000 * seconds)) * 0.2) * 5000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    return path


def fallback_chain(esl_port: int, hold: Path, tries: int) -> str:
    """The crash-safe dialplan of freeswitch/conf/dialplan/public/10_callctl.xml in the
    emulator's form: socket, then ``tries`` × (hold prompt, socket again), then give up."""
    sock = f"socket 127.0.0.1:{esl_port} async full"
    return "; ".join([sock, *[f"playback {hold}; {sock}"] * tries,
                      "hangup NORMAL_TEMPORARY_FAILURE"])


def write_config(path: Path, tmp: Path, esl_port: int, switch_port: int, redis_url: str,
                 namespace: str, node_id: str = "node-a", lease_s: float = 3.0,
                 grace_s: float = 5.0) -> tuple[Path, int]:
    """A daemon config (account flow on ``DID``, Vosk with one recognizer, espeak); returns
    (path, HTTP port)."""
    http_port, media_port = free_port(), free_port()
    path.write_text(f"""
[daemon]
node_id = "{node_id}"
max_calls = 4
drain_timeout_s = 1.0
resume_grace_s = {grace_s}
[esl]
listen_port = {esl_port}
port = {switch_port}
password = "ClueCon"
command_timeout_s = 2.0
linger_s = 3
reconnect_max_s = 0.5
[metrics]
listen_port = {http_port}
[media]
listen_port = {media_port}
public_url = "ws://127.0.0.1:{media_port}"
[asr]
engine = "vosk"
pool_size = 1
[tts]
engine = "espeak"
cache_dir = "{tmp / 'prompts'}"
[playback]
dir = "{tmp / 'playback'}"
[dialog]
flows_dir = "{REPO / 'callctl' / 'examples' / 'flows'}"
[store]
redis_url = "{redis_url}"
namespace = "{namespace}"
lease_s = {lease_s}
[log]
format = "json"
level = "info"
[[routes]]
did = "{DID}"
flow = "account"
""")
    return path, http_port


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``callctl run`` as a real process, output to ``log``."""
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "callctl", "run", "--config", str(config)],
                            stdout=out, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)


def wait_ready(proc: subprocess.Popen[bytes], http_port: int, timeout: float = 60) -> bool:
    """Until /readyz answers 200 (False at once if the process died)."""
    return wait_for(lambda: proc.poll() is not None or readyz(http_port)[0] == 200,
                    timeout) and proc.poll() is None


def readyz(http_port: int) -> tuple[int, bytes]:
    """(status, body) of GET /readyz, (0, b"") if nothing answers. Runs in the hub's
    threadpool: the daemon may be serving HTTP on this very hub."""
    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz",
                                        timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 0, b""
    result: tuple[int, bytes] = gevent.get_hub().threadpool.apply(get)
    return result


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        gevent.sleep(step)
    return cond()


def wait_quiet(call: SimCall, count: int, silence_s: float, timeout: float) -> bool:
    """Until the caller heard at least ``count`` stretches and nothing for ``silence_s``."""
    def quiet() -> bool:
        heard = call.heard()
        return len(heard) >= count and time.monotonic() - max(h.end for h in heard) > silence_s
    return wait_for(quiet, timeout)


def max_silence(call: SimCall, since: float, until: float) -> float:
    """Longest stretch between ``since`` and ``until`` when the caller heard nothing."""
    spans = sorted((h.start, h.end) for h in call.heard() if h.end > since and h.start < until)
    worst, at = 0.0, since
    for start, end in spans:
        worst = max(worst, start - at)
        at = max(at, end)
    return max(worst, until - at)


def dial_keys(call: SimCall, digits: str, gap_s: float = 0.12) -> None:
    for d in digits:
        call.dtmf(d)
        gevent.sleep(gap_s)


class InProcDaemon:
    """A daemon in this process (``Daemon.run()`` in a greenlet: reconciliation, READY) with
    the account flow on ``DID``, on the emulated switch ``sw``. ``stop()`` drains it."""

    def __init__(self, sw: Switch, tmp: Path, redis_url: str, asr: Any, node_id: str,
                 namespace: str, grace_s: float = 0.5, lease_s: float = 2.0,
                 queue_size: int = 10000) -> None:
        self.metrics = Metrics(CollectorRegistry())
        c = config
        self.cfg = c.Config(
            daemon=c.DaemonConfig(node_id=node_id, resume_grace_s=grace_s, drain_timeout_s=0.3),
            esl=c.EslConfig(listen_port=0, port=sw.esl_port, command_timeout_s=2.0, linger_s=3,
                            reconnect_max_s=0.5),
            media=c.MediaConfig(listen_port=0),
            metrics=c.MetricsConfig(listen_port=0),
            tts=c.TtsConfig(engine="espeak", fallback_engine="none",
                            cache_dir=str(tmp / "cache")),
            playback=c.PlaybackConfig(dir=str(tmp / "playback")),
            dialog=c.DialogConfig(flows_dir=str(REPO / "callctl" / "examples" / "flows")),
            store=c.StoreConfig(redis_url=redis_url, namespace=namespace, lease_s=lease_s,
                                queue_size=queue_size, timeout_s=0.3, retry_max_s=0.5),
            routes=(c.RouteConfig(did=DID, flow="account"),),
        )
        self.store = open_store(self.cfg.store, self.metrics)
        self.voice = Voice(self.cfg, self.metrics, store=self.store, asr=asr)
        self.daemon = Daemon(self.cfg, self.metrics, conversation_factory=self.voice)
        self.g = gevent.spawn(self.daemon.run)

    def wait_ready(self, timeout: float = 20) -> bool:
        return wait_for(lambda: self.daemon.ready, timeout)

    @property
    def socket_app(self) -> str:
        return f"socket 127.0.0.1:{self.daemon.server.port} async full"

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def stop(self) -> None:
        self.daemon._enqueue("TERM")
        self.g.join(timeout=10)
        self.g.kill()
