"""``callctl sim``: run the FreeSWITCH emulator, or place a test call into a running one.

``callctl sim serve [--esl-host H] [--esl-port P] [--esl-password PW] [--config FILE]``
serves inbound ESL (defaults 127.0.0.1:8021, password ClueCon) until SIGINT/SIGTERM, which
hang up every call and close every socket.

``callctl sim call --did D [--caller N] [--hangup-after S] [--esl-…]`` connects to a running
emulator's inbound ESL and sends ``api originate sofia/external/<caller> <did>`` (routed by
the emulator's dialplan), then ``api uuid_kill`` after S seconds (default: leave it up).

The ``--config`` file is TOML; every key is optional, command-line options win::

    [esl]
    host = "127.0.0.1"
    port = 8021
    password = "ClueCon"

    [switch]
    event_delay_s = 0.010   # ESL event delivery lag (FreeSWITCH: ~10 ms)
    speed = 1.0             # media clock speed factor (>1 = faster than real time)
    hostname = "sim-fs"     # FreeSWITCH-Hostname of every event
    heartbeat_s = 20.0      # HEARTBEAT interval

    [dialplan]              # destination number -> action; unknown numbers park
    "5000" = "socket 127.0.0.1:8040 async full"   # outbound ESL to the daemon (| = fallback hosts)
    "5001" = "park"                               # answer, then park (inbound-ESL control)
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any

import gevent
import gevent.event

from callctl.sim.switch import Switch, SwitchConfig


class SimConfigError(ValueError):
    """The ``--config`` file is unreadable or has a wrong key/type (message names the key)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sim_command", required=True)
    serve = sub.add_parser("serve", help="Serve an emulated FreeSWITCH (inbound ESL).")
    call = sub.add_parser("call", help="Place a test call into a running emulator.")
    for sp in (serve, call):
        sp.add_argument("--esl-host", default=None, help="ESL address (default 127.0.0.1).")
        sp.add_argument("--esl-port", type=int, default=None, help="ESL port (default 8021).")
        sp.add_argument("--esl-password", default=None, help="ESL password (default ClueCon).")
    serve.add_argument("--config", metavar="FILE", default=None,
                       help="TOML file with [esl], [switch] and [dialplan] (see module doc).")
    call.add_argument("--did", required=True, help="Destination number.")
    call.add_argument("--caller", default="+15550001111", help="Caller id number.")
    call.add_argument("--hangup-after", type=float, default=None, metavar="S",
                      help="Hang the call up after S seconds.")


def load_config(path: str | None, args: argparse.Namespace) -> SwitchConfig:
    """Build the ``SwitchConfig`` from the TOML file (if any) and the command line."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SimConfigError(f"{path}: {exc}") from None
    esl = data.get("esl", {})
    sw = data.get("switch", {})
    dialplan = data.get("dialplan", {})
    unknown = set(data) - {"esl", "switch", "dialplan"}
    if unknown:
        raise SimConfigError(f"unknown section(s) {sorted(unknown)}")
    for key, value in dialplan.items():
        if not isinstance(value, str) or not (value == "park" or value.startswith("socket ")):
            raise SimConfigError(f"dialplan.{key}: must be \"park\" or \"socket HOST:PORT …\"")
    kw: dict[str, Any] = {
        "esl_host": args.esl_host or esl.get("host", "127.0.0.1"),
        "esl_port": args.esl_port if args.esl_port is not None else esl.get("port", 8021),
        "password": args.esl_password or esl.get("password", "ClueCon"),
        "dialplan": {str(k): v for k, v in dialplan.items()},
    }
    types = {"event_delay_s": float, "speed": float, "hostname": str, "heartbeat_s": float}
    for key, value in sw.items():
        if key not in types:
            raise SimConfigError(f"switch.{key}: unknown key")
        try:
            kw[key] = types[key](value)
        except (TypeError, ValueError):
            raise SimConfigError(f"switch.{key}: expected {types[key].__name__}") from None
    if not isinstance(kw["esl_port"], int) or not 0 <= kw["esl_port"] < 65536:
        raise SimConfigError("esl.port: expected an integer 0..65535")
    if kw.get("speed", 1.0) <= 0:
        raise SimConfigError("switch.speed: must be > 0")
    return SwitchConfig(**kw)


def main(args: argparse.Namespace) -> int:
    if args.sim_command == "call":
        return _call(args)
    try:
        cfg = load_config(args.config, args)
    except SimConfigError as exc:
        print(f"callctl sim: config error: {exc}", file=sys.stderr)
        return 2
    sw = Switch(cfg)
    try:
        sw.start()
    except OSError as exc:
        print(f"callctl sim: cannot listen on {cfg.esl_host}:{cfg.esl_port}: {exc}",
              file=sys.stderr)
        return 1
    print(f"callctl sim: FreeSWITCH emulator on {cfg.esl_host}:{sw.esl_port}", flush=True)
    done = gevent.event.Event()
    handlers = [gevent.signal_handler(s, done.set) for s in (signal.SIGINT, signal.SIGTERM)]
    try:
        done.wait()
    finally:
        for h in handlers:
            h.cancel()
        sw.stop()
    return 0


def _call(args: argparse.Namespace) -> int:
    host, port = args.esl_host or "127.0.0.1", args.esl_port or 8021
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            f = s.makefile("rb")
            _read_frame(f)
            body = _command(s, f, f"auth {args.esl_password or 'ClueCon'}")
            if "+OK" not in body:
                print("callctl sim call: authentication failed", file=sys.stderr)
                return 1
            out = _command(s, f, f"api originate sofia/external/{args.caller} {args.did}")
            print(out.strip())
            if not out.startswith("+OK ") or args.hangup_after is None:
                return 0 if out.startswith("+OK") else 1
            gevent.sleep(args.hangup_after)
            print(_command(s, f, f"api uuid_kill {out.split()[1]}").strip())
            return 0
    except OSError as exc:
        print(f"callctl sim call: {host}:{port}: {exc}", file=sys.stderr)
        return 1


def _command(s: socket.socket, f: Any, line: str) -> str:
    s.sendall(line.encode() + b"\n\n")
    return _read_frame(f)


def _read_frame(f: Any) -> str:
    """One FS→client frame: Reply-Text for command/reply, the body otherwise."""
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if not line:
            raise OSError("connection closed")
        if line in (b"\n", b"\r\n"):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip()] = v.strip()
    n = int(headers.get("Content-Length", "0"))
    body = f.read(n).decode() if n else ""
    return headers.get("Reply-Text", body)
