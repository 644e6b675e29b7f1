"""`python -m callctl` / the `callctl` script: exit statuses, and nothing printed is lost
although the process ends with os._exit (see callctl/__main__.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from testkit import REPO

from callctl.cli import exit_status


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (2, 2), ("bad", 1)])
def test_exit_status_follows_sys_exit(code: object, status: int) -> None:
    assert exit_status(code) == status


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callctl", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_statuses_of_the_command_line() -> None:
    assert run("--version").returncode == 0
    assert run("no-such-command").returncode == 2
    bad = run("check-config", "--config", "/nonexistent/callctl.toml")
    assert bad.returncode != 0 and "/nonexistent/callctl.toml" in bad.stdout + bad.stderr


def test_everything_printed_reaches_a_pipe() -> None:
    """stdout to a pipe is block-buffered: the last lines must still arrive."""
    out = run("print-config")
    assert out.returncode == 0
    assert out.stdout.rstrip().splitlines()[-1].strip()          # the end is there
    assert out.stdout.count("\n") > 50
    assert "[store]" in out.stdout and "[log]" in out.stdout
