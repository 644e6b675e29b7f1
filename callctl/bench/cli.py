"""`callctl bench`: turn latency, barge-in, WER and CPU of callctl vs a cloud-style baseline,
measured side by side on this machine with the emulated switch (or, with ``--switch
freeswitch``, an existing FreeSWITCH) and real speech.

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


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        n = int(port)
    except ValueError:
        n = -1
    if not sep or not host or not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"want HOST:PORT, e.g. 127.0.0.1:5080: {text!r}")
    return host, n


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return n


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
    p.add_argument("--script", choices=("standard", "pauses"), default="standard",
                   help="What the callers say: standard (default), or pauses: utterances "
                        "with a comma pause (300-400 ms) or a 400-700 ms pause inside the "
                        "sentence. Premature replies are counted either way.")
    real = p.add_argument_group("a real switch (--switch freeswitch)")
    real.add_argument("--switch", choices=("sim", "freeswitch"), default="sim",
                      help="sim: the emulator (default); freeswitch: an existing FreeSWITCH "
                           "whose dialplan hands --did to callctl's socket.")
    real.add_argument("--sip", type=_hostport, default=None, metavar="HOST:PORT",
                      help="The switch's SIP profile the callers send INVITEs to.")
    real.add_argument("--did", default=None,
                      help="The number the callers dial (default +15551230000, which the "
                           "shipped freeswitch/conf routes to callctl).")
    real.add_argument("--config", default=None, metavar="PATH",
                      help="A callctl.toml whose [esl] gives the defaults of the next four.")
    real.add_argument("--esl-host", default=None,
                      help="FreeSWITCH Event Socket host, the daemon's control link "
                           "(default 127.0.0.1).")
    real.add_argument("--esl-port", type=_port, default=None,
                      help="FreeSWITCH Event Socket port (default 8021).")
    real.add_argument("--esl-password", default=None,
                      help="FreeSWITCH Event Socket password (default ClueCon).")
    real.add_argument("--daemon-esl-port", type=_port, default=None,
                      help="The port the switch's dialplan `socket` connects to; the bench's "
                           "daemon listens there (default 8040).")
    p.add_argument("--serve-daemon", default=None, help=argparse.SUPPRESS)


def real_switch(args: argparse.Namespace) -> Any:
    """The ``RealSwitchConfig`` of ``--switch freeswitch`` (defaults from ``--config``'s
    [esl]); ValueError (one line) when it cannot be built."""
    from callctl import config
    from callctl.bench.switches import FREESWITCH_DID, RealSwitchConfig

    if args.sip is None:
        raise ValueError("--switch freeswitch needs --sip HOST:PORT (the switch's SIP "
                         "profile that routes the DID to callctl)")
    if args.speed != 1.0:
        raise ValueError("--speed: a real switch runs in real time")
    esl = config.EslConfig()
    if args.config:
        try:
            esl = config.load(args.config, required=True).esl
        except config.ConfigError as e:
            raise ValueError(f"--config: {e}") from None
    return RealSwitchConfig(
        sip_host=args.sip[0], sip_port=args.sip[1], did=args.did or FREESWITCH_DID,
        esl_host=args.esl_host or esl.host, esl_port=args.esl_port or esl.port,
        esl_password=args.esl_password if args.esl_password is not None else esl.password,
        daemon_esl_port=args.daemon_esl_port or esl.listen_port)


def main(args: argparse.Namespace) -> int:
    from callctl.bench import runner

    if args.serve_daemon:
        return runner.serve_daemon(args.serve_daemon)
    turns = args.turns or (max(1, round(args.duration / 8)) if args.duration else 6)
    real = None
    if args.switch == "freeswitch":
        try:
            real = real_switch(args)
        except ValueError as e:
            print(f"callctl bench: {e}", file=sys.stderr)
            return 2
    elif any(v is not None for v in (args.sip, args.did, args.esl_host, args.esl_port,
                                     args.esl_password, args.daemon_esl_port)):
        print("callctl bench: --sip, --did, --esl-* and --daemon-esl-port need "
              "--switch freeswitch", file=sys.stderr)
        return 2
    bc = runner.BenchConfig(calls=args.calls, turns=turns, asr=args.asr, tts=args.tts,
                            playback=args.playback, speed=args.speed, budget_ms=args.budget_ms,
                            baseline=not args.no_baseline, sweep=args.sweep,
                            warmup=not args.no_warmup, spread_s=args.spread,
                            settings=tuple(args.settings), script=args.script,
                            switch=args.switch, real=real)
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
