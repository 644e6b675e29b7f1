"""``callctl run``: the daemon. Wires config, logging, metrics, HTTP, the outbound ESL server
and the control connection; talks to systemd; drains on SIGTERM; reloads on SIGHUP.

How this works: signal handlers only put a word in a bounded queue (``gevent.signal_handler``);
the main loop takes it and acts. ``READY=1`` goes to systemd once the ESL listener is bound,
the control connection is up and every registered readiness check passes. ``WATCHDOG=1`` is
sent by a greenlet on the hub every half ``WATCHDOG_USEC`` — a blocked hub stops it, and
systemd restarts us. SIGTERM runs the drain as named deadlines:

1. ``stop_taking_calls`` — listener closed, new calls rejected, ``STOPPING=1``;
2. ``let_calls_finish`` — until no call is left or ``daemon.drain_timeout_s`` passes;
3. ``hang_up_rest`` — every remaining call gets ``daemon.drain_hangup_cause``, bounded by
   ``esl.command_timeout_s``;
4. ``close`` — control connection and HTTP closed; exit status 0.

SIGHUP re-reads the config file and applies what is safe without a restart (routes,
routing, call limits, causes, drain timeout); it logs what changed and what needs a restart.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gevent
import gevent.queue

from callctl import config as config_mod
from callctl import log as log_mod
from callctl.call.session import ConversationFactory
from callctl.config import Config
from callctl.esl.adapter import EslEvent
from callctl.esl.control import ControlConnection
from callctl.esl.outbound import OutboundServer
from callctl.log import get_logger
from callctl.metrics import Metrics

#: Settings SIGHUP may change in place; everything else needs a restart.
RELOADABLE_DAEMON = ("max_calls", "drain_timeout_s", "over_capacity_cause", "drain_hangup_cause")


class SdNotify:
    """Minimal sd_notify(3) client: datagrams to ``$NOTIFY_SOCKET`` ('@' = abstract)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ok = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        #: seconds between WATCHDOG=1 pings (half the systemd timeout), or None.
        self.watchdog_interval = int(usec) / 2e6 if ok else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False (never raises) if not under systemd."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError:
            return False


def reload_config(old: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """(config to use, changed reloadable keys, changed keys that need a restart). Pure."""
    changed: list[str] = []
    restart: list[str] = []
    old_map = config_mod.to_mapping(old, mask_secrets=False)
    new_map = config_mod.to_mapping(new, mask_secrets=False)
    for section, values in new_map.items():
        if section == "routes":
            if values != old_map["routes"]:
                changed.append("routes")
            continue
        for key, value in values.items():
            if old_map[section].get(key) == value:
                continue
            name = f"{section}.{key}"
            if section == "routing" or (section == "daemon" and key in RELOADABLE_DAEMON):
                changed.append(name)
            else:
                restart.append(name)
    daemon = dataclasses.replace(
        old.daemon, **{k: getattr(new.daemon, k) for k in RELOADABLE_DAEMON})
    merged = dataclasses.replace(old, daemon=daemon, routing=new.routing, routes=new.routes)
    return merged, changed, restart


def size_threadpool(size: int = 0) -> int:
    """Set the hub threadpool's size (``daemon.threadpool_size``; 0: max(10, 2 × cores + 4),
    gevent's own default is 10 whatever the machine); returns it."""
    n = size or max(10, 2 * (os.cpu_count() or 1) + 4)
    gevent.get_hub().threadpool.maxsize = n
    return n


class Daemon:
    """One daemon process. ``run()`` blocks until drained; returns the exit status."""

    def __init__(self, cfg: Config, metrics: Metrics, config_path: str | None = None,
                 notifier: SdNotify | None = None,
                 conversation_factory: ConversationFactory | None = None,
                 http: bool = True) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.config_path = config_path
        self.notify = notifier or SdNotify()
        self.log = get_logger(component="daemon")
        self.commands: gevent.queue.Queue[str] = gevent.queue.Queue(16)
        self.server = OutboundServer(cfg, metrics, conversation_factory=conversation_factory)
        # A factory with a lifecycle (``callctl.voice.Voice``): started before READY.
        self.voice: Any = conversation_factory if hasattr(conversation_factory, "start") \
            else None
        self.registry = self.server.registry
        self.control = ControlConnection(cfg.esl, metrics, on_event=self._control_event)
        self.checks: dict[str, Callable[[], bool]] = {}
        self.http: Any = None
        self._want_http = http
        self.ready = False
        self._watchdog: gevent.Greenlet | None = None
        self._heartbeat: gevent.Greenlet | None = None
        self.ownership: Any = None          # callctl.ownership.Ownership (with a store)
        self.recovery: Any = None           # callctl.recovery.Recovery, run before READY
        metrics.set_state_source(self.registry.by_state)
        metrics.max_calls.set(cfg.daemon.max_calls)

    def add_ready_check(self, name: str, fn: Callable[[], bool]) -> None:
        """Something else that must be ready before READY=1 (e.g. models loaded)."""
        self.checks[name] = fn
        if self.http is not None:
            self.http.add_check(name, fn)

    # -- wiring ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the listeners and start the control connection; load the voice engines."""
        size_threadpool(self.cfg.daemon.threadpool_size)
        if self.voice is not None:
            self.notify.send("STATUS=starting: loading speech models")
            self.voice.start()
            self.add_ready_check("voice", self.voice.ready)
        self._own_calls()
        self.server.start()
        self.control.start()
        if self._want_http:
            from callctl.httpd import HttpServer
            self.http = HttpServer(self.cfg, self.metrics)
            self.http.add_check("esl_control", lambda: self.control.connected)
            self.http.add_check("accepting_calls", lambda: not self.server.draining)
            for name, fn in self.checks.items():
                self.http.add_check(name, fn)
            self.http.set_calls_source(lambda: [s.info() for s in self.registry])
            self.http.set_hangup_handler(self._hangup_call)
            self.http.set_transfer_handler(self._transfer_call)
            if self.ownership is not None:   # a store outage degrades, calls go on: report
                self.http.add_status("store", lambda: self.ownership.store.status)
            self.http.start()
        store = getattr(self.voice, "store", None)
        if store is not None:
            self._heartbeat = gevent.spawn(self._beat, store)
        if self.notify.watchdog_interval:
            self._watchdog = gevent.spawn(self._ping_watchdog, self.notify.watchdog_interval)
        self.notify.send("STATUS=starting: waiting for the FreeSWITCH control connection")

    def _ping_watchdog(self, interval: float) -> None:
        while True:
            self.notify.send("WATCHDOG=1")
            gevent.sleep(interval)

    def heartbeat_info(self) -> dict[str, Any]:
        """What this node's heartbeat says in the store (read by ``callctl status/calls``
        and by ``hangup``/``transfer`` to find the node's control endpoint)."""
        info: dict[str, Any] = {"max_calls": self.cfg.daemon.max_calls,
                                "calls": len(self.registry),
                                "ready": self._all_ready() and not self.server.draining}
        try:
            port = self.http.port if self.http is not None else None
        except RuntimeError:        # HTTP server stopped
            port = None
        if port is not None:
            host = self.http.host
            if host in ("", "0.0.0.0", "::"):
                host = socket.gethostname()
            elif ":" in host:
                host = f"[{host}]"
            info["control_url"] = f"http://{host}:{port}"
        return info

    def _beat(self, store: Any) -> None:
        """Every ``store.heartbeat_ttl_s``/3: ``store.heartbeat(node_id, heartbeat_info())``
        (no I/O here: the store's writer sends it)."""
        interval = max(0.05, self.cfg.store.heartbeat_ttl_s / 3)
        while True:
            try:
                store.heartbeat(self.cfg.daemon.node_id, self.heartbeat_info())
            except Exception:
                self.log.exception("daemon.heartbeat_failed")
            gevent.sleep(interval)

    def _hangup_call(self, uuid: str, cause: str) -> bool:
        s = self.registry.get(uuid)
        if s is None:
            return False
        s.request_hangup(cause)
        return True

    def _transfer_call(self, uuid: str, destination: str) -> bool:
        s = self.registry.get(uuid)
        if s is None:
            return False
        s.request_transfer(destination)
        return True

    def _control_event(self, ev: EslEvent) -> None:
        if ev.headers.get("Event-Name") != "CHANNEL_HANGUP_COMPLETE":
            return
        s = self.registry.get(ev.uuid or "")
        if s is not None:   # belt and braces: the call's own socket should say so too
            s._on_esl_event(ev)

    def install_signals(self) -> None:
        """Signals only enqueue; the main loop acts."""
        for sig, word in ((signal.SIGTERM, "TERM"), (signal.SIGINT, "TERM"),
                          (signal.SIGHUP, "HUP")):
            gevent.signal_handler(sig, self._enqueue, word)

    def _enqueue(self, word: str) -> None:
        try:
            self.commands.put_nowait(word)
        except gevent.queue.Full:
            pass

    # -- main loop ------------------------------------------------------------------------

    def _all_ready(self) -> bool:
        return self.control.connected and all(self._safe_check(fn) for fn in self.checks.values())

    @staticmethod
    def _safe_check(fn: Callable[[], bool]) -> bool:
        try:
            return bool(fn())
        except Exception:
            return False

    def _status(self) -> str:
        link = "up" if self.control.connected else "down"
        return f"STATUS={len(self.registry)} call(s); control link {link}"

    def run(self) -> int:
        """Start, serve until SIGTERM, drain; returns 0 after a clean drain."""
        self.start()
        last_status = ""
        while True:
            try:
                word = self.commands.get(timeout=0.5)
            except gevent.queue.Empty:
                word = None
            if not self.ready and self._all_ready():
                if self.recovery is not None and not self.recovery.ran:
                    self.recovery.run()
                self.ready = True
                self.metrics.ready.set(1)
                self.notify.send("READY=1", "STATUS=ready: taking calls")
                self.log.info("daemon.ready", esl_port=self.server.port,
                              http_port=self.http.port if self.http is not None else None)
            if word == "TERM":
                return self.drain()
            if word == "HUP":
                self.reload()
            status = self._status()
            if self.ready and status != last_status:
                self.notify.send(status)
                last_status = status

    def reload(self) -> None:
        """SIGHUP: re-read the config file, apply what is safe, log the rest."""
        try:
            new = config_mod.load(self.config_path)
        except config_mod.ConfigError as e:
            self.log.error("daemon.reload_failed", error=str(e))
            return
        unloaded = self._unloaded_flows(new)
        if unloaded:
            self.log.error("daemon.reload_failed", error="; ".join(unloaded))
            return
        merged, changed, restart = reload_config(self.cfg, new)
        self.cfg = merged
        self.server.update_config(merged)
        self.metrics.max_calls.set(merged.daemon.max_calls)
        self.log.info("daemon.reloaded", changed=changed, needs_restart=restart)
        self.notify.send(f"STATUS=reloaded: {len(changed)} change(s) applied, "
                         f"{len(restart)} need a restart")

    def _unloaded_flows(self, cfg: Config) -> list[str]:
        """One line per route of ``cfg`` whose flow the running voice did not load. Flows are
        loaded once, at start-up: a route to any other flow would fail every call on it, so
        a reload naming one is refused (adding a flow needs a restart)."""
        dialogs: Any = getattr(self.voice, "dialogs", None)
        flows = getattr(dialogs, "flows", None)
        if flows is None:
            return []
        used = [(r.flow, f"routes[{i}].flow") for i, r in enumerate(cfg.routes)]
        if cfg.routing.unknown_action == "default":
            used.append((cfg.routing.default_flow, "routing.default_flow"))
        llm = bool(dialogs.cfg.dialog.llm_url)
        return [f"{key}: flow {name!r} is not loaded (loaded: {', '.join(sorted(flows))}); "
                "a new flow needs a restart"
                for name, key in used if name not in flows and not (name == "llm" and llm)]

    def drain(self) -> int:
        """SIGTERM: the named deadlines in the module doc. Returns the exit status (0)."""
        t0 = time.monotonic()
        self.ready = False
        self.metrics.ready.set(0)
        # 1. stop_taking_calls
        self.server.draining = True
        self.server.stop_accepting()
        self.notify.send("STOPPING=1", f"STATUS=draining: {len(self.registry)} call(s) left")
        self.log.info("daemon.drain", phase="stop_taking_calls", calls=len(self.registry))
        # 2. let_calls_finish
        deadline = t0 + self.cfg.daemon.drain_timeout_s
        while len(self.registry) and time.monotonic() < deadline:
            gevent.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            self.notify.send(f"STATUS=draining: {len(self.registry)} call(s) left")
        # 3. hang_up_rest
        left = list(self.registry)
        if left:
            cause = self.cfg.daemon.drain_hangup_cause
            self.log.info("daemon.drain", phase="hang_up_rest", calls=len(left), cause=cause)
            for s in left:
                s.request_hangup(cause)
            gevent.wait([s.ended for s in left], timeout=self.cfg.esl.command_timeout_s + 1)
        # 4. close
        self.log.info("daemon.drain", phase="close", calls=len(self.registry),
                      took_s=round(time.monotonic() - t0, 3))
        self.close()
        return 0

    def _own_calls(self) -> None:
        """With a store: call leases (``callctl.ownership``) on the outbound server, and the
        start-up reconciliation (``callctl.recovery``) that ``run`` does before READY."""
        store = getattr(self.voice, "store", None)
        if store is None:
            return
        from callctl.ownership import Ownership
        from callctl.recovery import Recovery

        self.ownership = Ownership(store, self.cfg.daemon.node_id, self.cfg.store.lease_s,
                                   self.metrics)
        self.server.ownership = self.ownership
        self.ownership.start()
        self.recovery = Recovery(
            self.cfg, store, self.ownership,
            lambda cmd: self.control.api(cmd, timeout=self.cfg.esl.command_timeout_s),
            lambda uuid: self.registry.get(uuid) is not None,
            lambda: f"{self.cfg.esl.listen_host}:{self.server.port}", self.metrics)

    def close(self) -> None:
        if self.ownership is not None:
            self.ownership.stop()
        if self._watchdog is not None:
            self._watchdog.kill(block=False)
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
            self._heartbeat = None
            self.voice.store.node_stopped(self.cfg.daemon.node_id)
        self.control.stop()
        self.server.stop()
        if self.voice is not None:
            self.voice.close()
        if self.http is not None:
            self.http.stop(timeout=1)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from callctl.cli import add_config_argument

    add_config_argument(p)


def _conversation_factory(cfg: Config, metrics: Metrics,
                          config_path: str | None = None) -> ConversationFactory | None:
    """The dialog loop, if installed: ``callctl.voice.make_factory(cfg, metrics, …)``."""
    try:
        mod = importlib.import_module("callctl.voice")
    except ImportError:
        return None
    make = getattr(mod, "make_factory", None)
    return make(cfg, metrics, config_path) if make is not None else None


def main(args: argparse.Namespace) -> int:
    from callctl.cli import load_config_or_exit

    cfg = load_config_or_exit(args)
    log_mod.setup(cfg.log)
    metrics = Metrics()
    path = args.config if args.config else (
        str(config_mod.DEFAULT_PATH) if Path(config_mod.DEFAULT_PATH).exists() else None)
    notify = SdNotify()
    try:
        daemon = Daemon(cfg, metrics, config_path=path, notifier=notify,
                        conversation_factory=_conversation_factory(cfg, metrics, path))
        daemon.install_signals()
        return daemon.run()
    except StartupErrors as e:  # a port taken, a missing model or flow, a broken voice
        text = str(e).strip().replace("\n", "; ")
        get_logger().error("daemon.start_failed", error=text, kind=type(e).__name__)
        print(f"callctl: cannot start: {text}", file=sys.stderr)
        notify.send(f"STATUS=failed: {text[:200]}",
                    f"ERRNO={getattr(e, 'errno', None) or 0}")
        return 1


def _startup_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "this configuration cannot run here": one line, exit 1, no traceback."""
    from callctl.asr.base import AsrModelError
    from callctl.dialog.flow_model import FlowError
    from callctl.store.base import StoreError
    from callctl.tts.base import TtsError

    return (OSError, AsrModelError, FlowError, StoreError, TtsError)


StartupErrors = _startup_errors()
