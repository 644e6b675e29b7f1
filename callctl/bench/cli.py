"""`callctl bench`: turn latency, barge-in, WER and CPU of callctl vs a cloud-style baseline,
measured side by side on this machine with the emulated switch and real speech.

See ``callctl.bench.runner`` for how the run works, ``callctl.bench.report`` for the JSON
schema and BENCHMARKS.md for results. Exit status: 0 when the run completed (targets are
reported, not enforced), 1 when it could not run, 2 on bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callctl.bench.report import ReportError, summary_text, validate


def _sweep(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--sweep wants numbers like 1,5,10: {text!r}") from e
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("--sweep levels must be >= 1")
    return levels


def _setting(text: str) -> tuple[str, str, Any]:
    """``--set section.key=value``: the value is read as TOML (``150``, ``false``, ``"x"``;
    a bare word is a string) and checked like the config file's."""
    from callctl import config

    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise argparse.ArgumentTypeError(f"--set wants section.key=value: {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    try:
        config.from_mapping({section: {key: value}}, env={})
    except config.ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return section, key, value


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def check(text: str) -> int | float:
        try:
            v = kind(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return v
    return check


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=_positive(int), default=10,
                   help="Concurrent calls (default 10).")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--turns", type=_positive(int), default=None,
                        help="Caller turns per call (default 6).")
    length.add_argument("--duration", type=_positive(float), default=None, metavar="S",
                        help="Approximate call length in seconds (about 8 s per turn).")
    p.add_argument("--asr", choices=("vosk", "whisper"), default="vosk",
                   help="Recognizer (default vosk; the model installed here is Korean).")
    p.add_argument("--tts", choices=("piper", "espeak"), default="piper",
                   help="The bot's voice (default piper).")
    p.add_argument("--playback", choices=("file", "stream"), default="file",
                   help="Playback mode (default file: sendmsg playback).")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="Write the JSON report here.")
    p.add_argument("--plot", type=Path, default=None, metavar="PATH",
                   help="Write the PNG plot here.")
    p.add_argument("--sweep", type=_sweep, default=(), metavar="N,N,…",
                   help="Also run callctl alone at these concurrencies (e.g. 1,5,10,20,40).")
    p.add_argument("--budget-ms", type=_positive(float), default=400.0,
                   help="p95 turn-latency budget for the sweep (default 400).")
    p.add_argument("--speed", type=_positive(float), default=1.0,
                   help="Emulator media clock speed (default 1.0; >1 only where timing "
                        "does not matter, e.g. tests).")
    p.add_argument("--no-baseline", action="store_true",
                   help="Skip the cloud-style baseline.")
    p.add_argument("--spread", type=_positive(float), default=10.0, metavar="S",
                   help="Calls dial in evenly over S media seconds (default 10, about one "
                        "turn: callers' speech is not in lockstep).")
    p.add_argument("--no-warmup", action="store_true",
                   help="Measure from cold recognizers (no unmeasured warm-up calls).")
    p.add_argument("--set", type=_setting, action="append", default=[], dest="settings",
                   metavar="SECTION.KEY=VALUE",
                   help="Change a daemon setting for both pipelines (repeatable), e.g. "
                        "--set turns.endpoint_silence_ms=150; recorded in the report's config.")
    p.add_argument("--serve-daemon", default=None, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    from callctl.bench import runner

    if args.serve_daemon:
        return runner.serve_daemon(args.serve_daemon)
    turns = args.turns or (max(1, round(args.duration / 8)) if args.duration else 6)
    bc = runner.BenchConfig(calls=args.calls, turns=turns, asr=args.asr, tts=args.tts,
                            playback=args.playback, speed=args.speed, budget_ms=args.budget_ms,
                            baseline=not args.no_baseline, sweep=args.sweep,
                            warmup=not args.no_warmup, spread_s=args.spread,
                            settings=tuple(args.settings))
    try:
        report, samples = runner.run_bench(bc)
        validate(report)
    except (RuntimeError, OSError, ReportError) as e:
        print(f"callctl bench: {e}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        from callctl.bench.plot import plot

        plot(report, samples, args.plot)
    print(summary_text(report), flush=True)
    return 0
