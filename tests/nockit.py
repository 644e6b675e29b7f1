"""The NOC test rig: emulated FreeSWITCH → a real daemon (outbound ESL, control link, HTTP
port with /metrics and the control endpoints, node heartbeats) → real Vosk, real espeak, real
Redis; plus ``run_cli`` to run ``python -m callctl …`` against it without blocking the hub.
Plain code shared by tests/test_noc_*.py: ``from nockit import NocRig, …``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.subprocess
from prometheus_client import CollectorRegistry
from testkit import REPO, free_port

from callctl import config
from callctl.daemon import Daemon
from callctl.metrics import Metrics
from callctl.sim import callers
from callctl.sim.switch import SimCall, Switch, SwitchConfig
from callctl.store import SessionStore, open_store
from callctl.voice import Voice

EXAMPLES = REPO / "callctl" / "examples"
DID = "+15551230000"
CALLER = "+15557654321"
NODE = "noc-node-1"
DOWN_REASONS = ("connection refused", "publishes no control_url")


@dataclass
class Cli:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}


def run_cli(cfg_path: Path, *argv: str, timeout: float = 30.0) -> Cli:
    """``python -m callctl <argv> --config cfg_path`` without blocking this process's hub."""
    proc = gevent.subprocess.Popen(
        [sys.executable, "-m", "callctl", *argv, "--config", str(cfg_path)],
        stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, env=env(), cwd=REPO)
    out, err = proc.communicate(timeout=timeout)
    return Cli(proc.returncode, out.decode(), err.decode())


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(what: str, cond: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        gevent.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class NocRig:
    def __init__(self, tmp: Path, redis_url: str, asr: Any) -> None:
        self.metrics = Metrics(CollectorRegistry())
        self.dialplan: dict[str, str] = {}
        self.sw = Switch(SwitchConfig(esl_port=0, dialplan=self.dialplan))
        self.sw.start()
        self.http_port = free_port()
        self.namespace = f"noc{os.getpid()}x{id(self)}"
        c = config
        self.cfg = c.Config(
            daemon=c.DaemonConfig(node_id=NODE, max_calls=7),
            esl=c.EslConfig(listen_port=0, port=self.sw.esl_port, command_timeout_s=3.0,
                            linger_s=5),
            media=c.MediaConfig(listen_port=0),
            metrics=c.MetricsConfig(listen_port=self.http_port),
            tts=c.TtsConfig(engine="espeak", cache_dir=str(tmp / "cache")),
            playback=c.PlaybackConfig(dir=str(tmp / "playback")),
            dialog=c.DialogConfig(flows_dir=str(EXAMPLES / "flows")),
            store=c.StoreConfig(redis_url=redis_url, namespace=self.namespace,
                                heartbeat_ttl_s=3.0),
            routes=(c.RouteConfig(did=DID, flow="front_desk"),),
        )
        self.store: SessionStore = open_store(self.cfg.store, self.metrics)
        self.voice = Voice(self.cfg, self.metrics, store=self.store, asr=asr)
        self.daemon = Daemon(self.cfg, self.metrics, conversation_factory=self.voice)
        self.daemon.start()
        self.dialplan[DID] = f"socket 127.0.0.1:{self.daemon.server.port} async full"
        # What an operator's /etc/callctl/callctl.toml on this node would say.
        self.cli_cfg = write_config(
            tmp / "cli.toml",
            daemon={"node_id": NODE, "max_calls": 7},
            esl={"host": "127.0.0.1", "port": self.sw.esl_port},
            metrics={"listen_port": self.http_port},
            asr={"engine": "vosk"}, tts={"engine": "espeak"},
            store={"redis_url": redis_url, "namespace": self.namespace})
        assert self.daemon.control.wait_connected(10)
        wait_for("a ready node heartbeat", lambda: any(
            n.node_id == NODE and n.info.get("ready") for n in self.store.nodes()), 10)

    def cli(self, *argv: str, timeout: float = 30.0) -> Cli:
        return run_cli(self.cli_cfg, *argv, timeout=timeout)

    def call(self, *steps: Any, listening: bool = False) -> SimCall:
        """A caller who follows ``steps`` once answered (default: stays silent). With
        ``listening``, return once the greeting has played and the bot listens (the emulator
        runs a queued ``sendmsg hangup`` only between applications, like an event-locked
        playback does)."""
        script = callers.Caller([callers.wait_answer(), *(steps or [callers.pause(60)])])
        call = self.sw.place_call(DID, CALLER, "PCMU", script=script)
        assert call.wait_answered(10)
        wait_for("the call in Redis", lambda: self.store.get_call(call.uuid), 10)
        if listening:
            wait_for("the bot to listen", lambda: (s := self.daemon.registry.get(call.uuid))
                     is not None and s.state.value == "listening", 20)
        return call

    def close(self) -> None:
        self.sw.stop()
        self.daemon.close()
