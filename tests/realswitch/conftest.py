"""Fixtures of the real-switch tests: a FreeSWITCH on callctl's own freeswitch/conf and a
callctl daemon process driving it (``fskit``), callers from ``callctl.sim.phone``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fskit import Daemon, FreeSwitch, daemon_config, need_switch, wait_for
from testkit import free_port

from callctl.sim.phone import Phone, PhoneCall, find_uuid


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "realswitch" in str(item.fspath):
            item.add_marker(pytest.mark.realswitch)
            item.add_marker(pytest.mark.slow)


@dataclass
class Node:
    """One switch, one daemon, and a phone that calls into the switch."""

    fs: FreeSwitch
    daemon: Daemon
    phone: Phone
    callers: int = 0

    def call(self, did: str = "+15551230000") -> PhoneCall:
        """A call from a fresh caller number; its ``uuid`` is set once the switch has it."""
        self.callers += 1
        caller = f"+1555{self.fs.sip_port % 1000:03d}{self.callers:04d}"
        c = self.phone.call(did, caller)
        c.uuid = wait_for("the call's channel", lambda: find_uuid(self.fs.channels(), caller),
                          10)
        return c


def start_node(tmp: Path, redis_url: str | None,
               overrides: dict[str, dict[str, Any]] | None = None,
               extra_vars: dict[str, str] | None = None) -> Node:
    """A switch on callctl's conf (``extra_vars`` into its vars.local) and a ready daemon
    (``overrides`` merged into its config sections)."""
    need_switch()
    esl_listen = free_port()
    fs = FreeSwitch(tmp / "fs", esl_listen, extra_vars=extra_vars)
    fs.start()
    d = Daemon(tmp / "callctl", daemon_config(tmp / "callctl", fs, esl_listen, redis_url,
                                               overrides))
    d.start()
    try:
        d.wait_ready()
    except BaseException:
        d.stop()
        fs.stop()
        raise
    return Node(fs, d, Phone("127.0.0.1", fs.sip_port))


def stop_node(node: Node) -> None:
    node.daemon.stop()
    node.fs.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Node]:
    """A switch and a daemon shared by a module's tests (Vosk, Piper, file playback)."""
    n = start_node(tmp_path_factory.mktemp("node"), redis_url)
    yield n
    stop_node(n)
