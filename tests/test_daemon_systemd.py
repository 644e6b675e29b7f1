"""The systemd units verify, and their hardening stays where the README says it is."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import REPO

UNITS = REPO / "systemd"


def _copy_for_check(tmp_path: Path, name: str, as_name: str) -> Path:
    """The unit with ExecStart pointing at an executable that exists on this machine."""
    text = (UNITS / name).read_text()
    assert "/opt/callctl/venv/bin/callctl run --config" in text
    out = tmp_path / as_name
    out.write_text(text.replace("/opt/callctl/venv/bin/callctl", sys.executable))
    return out


@pytest.fixture(scope="module")
def analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        raise RuntimeError("systemd-analyze is not installed (apt: systemd)")
    return exe


@pytest.mark.parametrize("name,as_name", [("callctl.service", "callctl.service"),
                                          ("callctl@.service", "callctl@a.service")])
def test_units_verify(analyze: str, tmp_path: Path, name: str, as_name: str) -> None:
    unit = _copy_for_check(tmp_path, name, as_name)
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@pytest.mark.parametrize("name,as_name", [("callctl.service", "callctl.service"),
                                          ("callctl@.service", "callctl@a.service")])
def test_security_exposure_is_low(analyze: str, tmp_path: Path, name: str,
                                  as_name: str) -> None:
    unit = _copy_for_check(tmp_path, name, as_name)
    r = subprocess.run([analyze, "security", "--offline=yes", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert m, r.stdout[-500:] + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


def test_unit_contract() -> None:
    text = (UNITS / "callctl.service").read_text()
    for line in ("Type=notify", "Restart=on-failure", "User=callctl", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/var/lib/callctl /var/cache/callctl",
                 "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes"):
        assert line in text, line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    env = (UNITS / "callctl.env.example").read_text()
    assert "CALLCTL_ESL_PASSWORD=" in env
