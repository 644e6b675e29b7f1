"""A whole daemon on the emulator for the conversation tests (``from conversation_rig import
Rig``): emulated FreeSWITCH (Switch) → daemon (outbound ESL) → Voice (real fork server, real
ASR engine, real espeak TTS, real Redis). ``Rig.said`` records every sentence the conversation
handed to the (real) Speaker, in order, so a test can tell what the caller heard."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gevent
from prometheus_client import CollectorRegistry

from callctl import config
from callctl.daemon import Daemon
from callctl.metrics import Metrics
from callctl.sim import callers
from callctl.sim.switch import SimCall, Switch, SwitchConfig
from callctl.store import open_store
from callctl.voice import Voice

EXAMPLES = Path(__file__).resolve().parent.parent / "callctl" / "examples"
DID = "+15551230000"


class Rig:
    """One daemon + emulator. ``cfg_changes`` replace whole config sections
    (``turns=TurnsConfig(...)``); ``flow`` is the route's flow name."""

    def __init__(self, tmp_path: Path, redis_url: str, asr: Any, flow: str = "front_desk",
                 flows_dir: Path | None = None, speaker: Any = None,
                 **cfg_changes: Any) -> None:
        self.tmp = tmp_path
        self.metrics = Metrics(CollectorRegistry())
        self.dialplan: dict[str, str] = {}
        self.sw = Switch(SwitchConfig(esl_port=0, dialplan=self.dialplan))
        self.sw.start()
        c = config
        self.cfg = c.Config(
            esl=c.EslConfig(listen_port=0, port=self.sw.esl_port, command_timeout_s=3.0,
                            linger_s=5),
            media=c.MediaConfig(listen_port=0),
            metrics=c.MetricsConfig(listen_port=0),
            tts=c.TtsConfig(engine="espeak", fallback_engine="none",
                            cache_dir=str(tmp_path / "cache")),
            playback=c.PlaybackConfig(dir=str(tmp_path / "playback")),
            dialog=c.DialogConfig(flows_dir=str(flows_dir or EXAMPLES / "flows")),
            store=c.StoreConfig(redis_url=redis_url, namespace=f"conv{id(self)}"),
            routes=(c.RouteConfig(did=DID, flow=flow),),
        )
        if cfg_changes:
            self.cfg = dataclasses.replace(self.cfg, **cfg_changes)
        self.store = open_store(self.cfg.store, self.metrics)
        self.voice = Voice(self.cfg, self.metrics, store=self.store, asr=asr, speaker=speaker)
        self.said: list[str] = []
        self.replies: list[Any] = []           # the Speaker's Reply objects, in order
        real_say = self.voice.speaker.say

        def say(text: str, *args: Any, **kw: Any) -> Any:
            self.said.append(text)
            reply = real_say(text, *args, **kw)
            self.replies.append(reply)
            return reply

        self.voice.speaker.say = say  # type: ignore[method-assign]
        self.daemon = Daemon(self.cfg, self.metrics, conversation_factory=self.voice)
        self.daemon.start()
        self.dialplan[DID] = f"socket 127.0.0.1:{self.daemon.server.port} async full"

    def call(self, steps: list[Any]) -> tuple[SimCall, callers.Caller]:
        caller = callers.Caller(steps)
        call = self.sw.place_call(DID, "+15557654321", "PCMU", script=caller)
        assert call.wait_answered(10)
        return call, caller

    def run(self, steps: list[Any], timeout: float = 30) -> tuple[SimCall, callers.Caller]:
        """One whole call (``call`` then ``finish``), then ``close`` the rig however it went:
        for tests that look only at what happened once the call is over."""
        try:
            call, caller = self.call(steps)
            self.finish(call, timeout)
        finally:
            self.close()
        return call, caller

    def finish(self, call: SimCall, timeout: float = 30) -> str | None:
        """Wait for the hangup and for the daemon to forget the call; returns the cause."""
        cause = call.wait_hangup(timeout)
        with gevent.Timeout(10):
            while len(self.daemon.registry):
                gevent.sleep(0.05)
        return cause

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def transfers(self, uuid: str) -> list[str]:
        """Targets of the transfers the store recorded for the call."""
        assert self.store.flush(5)
        return [e.fields.get("target", "") for e in self.store.read_events(count=1000)
                if e.uuid == uuid and e.kind == "transferred"]

    def playback_files(self) -> list[Path]:
        root = Path(self.cfg.playback.dir)
        return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []

    def close(self) -> None:
        self.sw.stop()
        self.daemon.close()


def write_flow(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return directory


class HttpRecorder:
    """A local HTTP server (own thread, real sockets) that records POST bodies and can be
    made slow: ``delay_s`` before it answers."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        self.delay_s = delay_s
        self.got = threading.Event()
        self.first_at: float | None = None
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                rec.bodies.append(self.rfile.read(n))
                if rec.first_at is None:
                    rec.first_at = time.monotonic()
                rec.got.set()
                threading.Event().wait(rec.delay_s)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rig_fixture(tmp_path: Path, redis_url: str, asr: Any, **kw: Any) -> Iterator[Rig]:
    r = Rig(tmp_path, redis_url, asr, **kw)
    try:
        yield r
    finally:
        r.close()


__all__ = ["DID", "EXAMPLES", "HttpRecorder", "Rig", "os", "rig_fixture", "write_flow"]
