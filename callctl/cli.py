"""`callctl` command line.

Each subcommand lives in the module that owns the work. The module exposes
``add_arguments(parser)`` and ``main(args) -> int``; ``COMMANDS`` maps names to modules, and a
module is imported only when its command runs (or its ``--help`` is asked for).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from callctl import __version__, config

# name -> (module, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("callctl.cli", "Validate the configuration without starting anything."),
    "print-config": ("callctl.cli", "Print the effective configuration (secrets masked)."),
    "sim": ("callctl.sim.cli", "FreeSWITCH emulator (serve an emulated switch, place calls)."),
    "demo": ("callctl.demo", "Run the emulated switch, the daemon and scripted callers."),
    "run": ("callctl.daemon", "Run the call-control daemon (the systemd service's job)."),
    "models": ("callctl.asr.models", "List, fetch (explicitly) and verify models (Vosk ASR, "
               "the Smart Turn end-of-turn model)."),
    "bench": ("callctl.bench.cli", "Measure turn latency under load, side by side with a "
              "cloud-style baseline."),
    "status": ("callctl.noc", "Daemon, ESL link, Redis, models, capacity and nodes at a glance."),
    "calls": ("callctl.noc", "Live calls on every node (from Redis)."),
    "show": ("callctl.noc", "One call's timeline and transcript; --follow for live turns."),
    "hangup": ("callctl.noc", "Hang up a call (daemon control endpoint, else FreeSWITCH ESL)."),
    "transfer": ("callctl.noc", "Transfer a call (daemon control endpoint, else FreeSWITCH ESL)."),
}


def add_config_argument(p: argparse.ArgumentParser) -> None:
    """The ``--config PATH`` option shared by every command that reads the config."""
    p.add_argument(
        "--config", metavar="PATH", default=None,
        help=f"TOML config file (default {config.DEFAULT_PATH} if it exists). "
        "Settings can be overridden with CALLCTL_<SECTION>_<KEY> environment variables.",
    )


def load_config_or_exit(args: argparse.Namespace) -> config.Config:
    """Load the config named by ``args.config``; on error print one line and exit 2."""
    try:
        return config.load(args.config)
    except config.ConfigError as e:
        print(f"callctl: config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    if p.prog.endswith("print-config"):
        p.add_argument("--json", action="store_true", help="Print JSON instead of TOML.")


def main(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    if args.command == "check-config":
        problems = _check_routes(cfg, args.config or config.DEFAULT_PATH)
        for line in problems:
            print(f"callctl: config error: {line}", file=sys.stderr)
        if problems:
            return 2
        print(f"config OK ({args.config or config.DEFAULT_PATH}): "
              f"{len(cfg.routes)} route(s)")
        return 0
    data = config.to_mapping(cfg)
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    else:
        print(_to_toml(data), end="")
    return 0


def _check_routes(cfg: config.Config, path: Any = None) -> list[str]:
    """Deeper checks that need other modules (flows); each returns one-line problems."""
    try:
        flows = importlib.import_module("callctl.dialog.flows")
    except ImportError:
        return []
    check = getattr(flows, "check_config", None)
    return list(check(cfg, path)) if check else []


def _to_toml(data: dict[str, Any]) -> str:
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(v)

    out = []
    for section, values in data.items():
        if section == "routes":
            continue
        out.append(f"[{section}]")
        out.extend(f"{k} = {val(v)}" for k, v in values.items())
        out.append("")
    for route in data["routes"]:
        out.append("[[routes]]")
        out.extend(f"{k} = {val(v)}" for k, v in route.items())
        out.append("")
    return "\n".join(out)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser. With ``only``, just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="callctl",
        description="On-prem voice-agent call control for FreeSWITCH.",
    )
    parser.add_argument("--version", action="version", version=f"callctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def exit_status(code: object) -> int:
    """``sys.exit``'s rules: None is 0, an int is itself, anything else is printed, 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def cli_main(argv: list[str]) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(args) or 0)
