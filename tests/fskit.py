"""A real FreeSWITCH and a real callctl daemon, as processes, for the real-switch tests.

How this works: ``FreeSwitch(workdir)`` copies callctl's own ``freeswitch/conf/`` and adds ONE
file, ``vars.local/test.xml``, that points it at loopback test ports, a test password, the
built-in ``loopback.auto`` ACL for the caller and the test's callctl ports (nothing else is
edited: what the tests load is what an operator installs). It starts ``freeswitch -nc
-ncwait`` with every state directory under the workdir and the mod_audio_fork environment of
the shipped systemd drop-in, so several can run side by side. ``api()`` runs ``fs_cli -x``.

The switch is found through ``CALLCTL_TEST_FREESWITCH_BIN`` (a FreeSWITCH ``bin/``; default
``/usr/local/freeswitch/bin``). Where there is none the tests skip with that reason, except when
a real switch is required (``CALLCTL_REQUIRE_FREESWITCH=1``, or ``CI=true`` with the shared
switch beside the checkout): then a missing switch fails the test.

``Daemon(workdir, fs, …)`` writes a config for that switch and runs ``python -m callctl run``;
its JSON log lines are kept in a file (``events()``), ``wait_ready`` polls ``/readyz``.

Tests here are not monkey-patched and the test phone runs on gevent, so every wait yields to
the hub (``gevent.sleep``, ``gevent.subprocess``): a blocking call would stall the phone's
20 ms RTP clock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import gevent
import gevent.subprocess
import pytest
from nockit import wait_for, write_config
from testkit import REPO, free_port

CONF = REPO / "freeswitch" / "conf"
DEFAULT_BIN = Path("/usr/local/freeswitch/bin")
SHARED_SWITCH = REPO.parent / "shared" / "freeswitch"
PASSWORD = "callctl-test-esl"
FLOWS = REPO / "callctl" / "examples" / "flows"
ROUTES = (("+15551230000", "front_desk"), ("+15551230001", "appointment"),
          ("+15551230002", "account"))


def freeswitch_bin() -> Path | None:
    """The FreeSWITCH bin/ directory to test against, or None."""
    env = os.environ.get("CALLCTL_TEST_FREESWITCH_BIN")
    path = Path(env) if env else DEFAULT_BIN
    return path if (path / "freeswitch").is_file() and (path / "fs_cli").is_file() else None


def switch_required() -> bool:
    if os.environ.get("CALLCTL_REQUIRE_FREESWITCH") == "1":
        return True
    return os.environ.get("CI") == "true" and SHARED_SWITCH.is_dir()


def need_switch() -> Path:
    """The bin/ directory; skips the test (or fails it where a switch is required)."""
    found = freeswitch_bin()
    if found is None:
        why = ("no FreeSWITCH: set CALLCTL_TEST_FREESWITCH_BIN to a FreeSWITCH bin/ directory "
               f"(looked in {os.environ.get('CALLCTL_TEST_FREESWITCH_BIN') or DEFAULT_BIN})")
        if switch_required():
            pytest.fail(why + " but a real switch is required here")
        pytest.skip(why)
    return found


def _dropin_env() -> dict[str, str]:
    text = (CONF / "systemd" / "freeswitch.service.d" / "audio-fork.conf").read_text()
    out = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            k, _, v = line.removeprefix("Environment=").partition("=")
            out[k] = v
    return out


class FreeSwitch:
    """One FreeSWITCH on callctl's config; see the module doc."""

    def __init__(self, workdir: Path, callctl_esl_port: int, bin_dir: Path | None = None,
                 extra_vars: dict[str, str] | None = None) -> None:
        self.bin = bin_dir or need_switch()
        self.dir = workdir
        self.esl_port = free_port()
        self.sip_port = free_port()
        self.callctl_esl_port = callctl_esl_port
        self.vars = {
            "esl_password": PASSWORD, "esl_port": str(self.esl_port),
            "callctl_socket": f"127.0.0.1:{callctl_esl_port}",
            "sip_trunk_acl": "loopback.auto", "sip_ip": "127.0.0.1", "rtp_ip": "127.0.0.1",
            "external_sip_ip": "127.0.0.1", "external_rtp_ip": "127.0.0.1",
            "external_sip_port": str(self.sip_port), "console_loglevel": "warning",
            # where a caller goes when callctl cannot serve it: a busy signal in tests
            "callctl_human_dialstring": "error/USER_BUSY",
            **(extra_vars or {}),
        }
        self.pid: int | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "conf"

    def render(self) -> Path:
        """callctl's freeswitch/conf plus vars.local/test.xml under the workdir."""
        if self.conf.exists():
            shutil.rmtree(self.conf)
        shutil.copytree(CONF, self.conf)
        sets = "\n".join(f'  <X-PRE-PROCESS cmd="set" data="{k}={v}"/>'
                         for k, v in self.vars.items())
        (self.conf / "vars.local" / "test.xml").write_text(f"<include>\n{sets}\n</include>\n")
        return self.conf

    def _dirs(self) -> list[str]:
        args = []
        for flag, name in (("-log", "log"), ("-db", "db"), ("-run", "run"), ("-temp", "tmp"),
                           ("-cache", "cache"), ("-recordings", "rec"),
                           ("-storage", "storage")):
            (self.dir / name).mkdir(parents=True, exist_ok=True)
            args += [flag, str(self.dir / name)]
        return args

    def start(self, timeout: float = 30.0) -> None:
        self.render()
        env = dict(os.environ, **_dropin_env())
        gevent.subprocess.run([str(self.bin / "freeswitch"), "-nc", "-ncwait", "-nonat",
                        "-conf", str(self.conf), *self._dirs()],
                       cwd=self.dir, env=env, check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = int((self.dir / "run" / "freeswitch.pid").read_text().strip())
        wait_for("FreeSWITCH's event socket", lambda: self.api("status", check=False)
                 .startswith("UP"), timeout)

    def api(self, command: str, check: bool = True, timeout: float = 10.0) -> str:
        """``fs_cli -x command`` on the test ESL port; its output (stripped)."""
        r = gevent.subprocess.run([str(self.bin / "fs_cli"), "-H", "127.0.0.1", "-P",
                            str(self.esl_port), "-p", PASSWORD, "-x", command],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"fs_cli -x {command!r}: rc {r.returncode} {r.stderr.strip()}")
        return r.stdout.strip()

    def channels(self) -> list[dict[str, Any]]:
        """Rows of ``show channels as json``."""
        raw = self.api("show channels as json")
        return list(json.loads(raw).get("rows", [])) if raw.startswith("{") else []

    def log_text(self) -> str:
        path = self.dir / "log" / "freeswitch.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        self.api("fsctl shutdown", check=False)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            gevent.sleep(0.1)
        if self.alive() and self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None


def daemon_config(workdir: Path, fs: FreeSwitch, esl_listen_port: int, redis_url: str | None,
                  overrides: dict[str, dict[str, Any]] | None = None) -> str:
    """A callctl.toml (text) for a daemon driving ``fs``, the three example DIDs routed to the
    example flows; ``overrides`` are merged into its sections (``{"media": {...}}``)."""
    sections: dict[str, dict[str, Any]] = {
        "daemon": {"max_calls": 8, "drain_timeout_s": 2.0, "resume_grace_s": 3.0,
                   "work_dir": str(workdir / "work")},
        "esl": {"listen_port": esl_listen_port, "port": fs.esl_port, "password": PASSWORD,
                "command_timeout_s": 3.0, "linger_s": 3, "reconnect_max_s": 1.0},
        "media": {"listen_port": free_port()},
        "metrics": {"listen_port": free_port()},
        "store": {"lease_s": 3.0, **({"redis_url": redis_url} if redis_url else {})},
        "tts": {"engine": "piper", "fallback_engine": "espeak",
                "cache_dir": str(workdir / "prompts")},
        "playback": {"dir": str(workdir / "playback")},
        "dialog": {"flows_dir": str(FLOWS)},
        "log": {"format": "json", "level": "info"},
    }
    for name, values in (overrides or {}).items():
        sections[name] = {**sections.get(name, {}), **values}
    path = workdir / "callctl.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(path, **sections)
    routes = "".join(f'\n[[routes]]\ndid = "{did}"\nflow = "{flow}"\n' for did, flow in ROUTES)
    return path.read_text() + routes


class Daemon:
    """``python -m callctl run`` as a process; see the module doc."""

    def __init__(self, workdir: Path, config_text: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.config = workdir / "callctl.toml"
        self.config.write_text(config_text)
        self.http_port = int(tomllib.loads(config_text)["metrics"]["listen_port"])
        self.out = workdir / "daemon.out"
        self.err = workdir / "daemon.err"
        self.proc: subprocess.Popen[bytes] | None = None


    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "callctl", "run", "--config", str(self.config)],
                stdout=out, stderr=err, env=env, cwd=self.dir)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz",
                                        timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"callctl run exited {self.proc.returncode}: "
                                     f"{self.err.read_text()[-2000:]}")
            return self.ready()

        wait_for("the daemon's /readyz", up, timeout)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log lines so far (all, or those whose event is ``name``)."""
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if name is None or e.get("event") == name:
                    out.append(e)
        return out

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit status (AssertionError if still running after ``timeout``)."""
        proc = self.proc
        assert proc is not None
        return int(wait_for("callctl run to exit", lambda: proc.poll() is not None, timeout)
                   and proc.returncode)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.wait(15)
        except AssertionError:
            self.proc.kill()
            self.proc.wait(timeout=5)
