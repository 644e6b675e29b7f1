"""callctl's hangup-cause table (callctl/causes.py) against the real FreeSWITCH 1.10: every
name and code is the installed build's (its own ``switch_channel_cause2str`` and
``switch_channel_str2cause``), and causes the old 17-name table refused hang up a live call
from the NOC CLI with that cause on the wire (the caller's BYE ``Reason`` names it)."""

from __future__ import annotations

import json
import subprocess
import sys

import gevent
import pytest
from conftest import Node
from fskit import need_switch, wait_for
from testkit import REPO

from callctl.causes import SWITCH_CALL_CAUSES

_DUMP = """
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
lib.switch_channel_cause2str.restype = ctypes.c_char_p
lib.switch_channel_cause2str.argtypes = [ctypes.c_int]
lib.switch_channel_str2cause.restype = ctypes.c_int
lib.switch_channel_str2cause.argtypes = [ctypes.c_char_p]
by_code = {}
for code in range(2000):
    name = lib.switch_channel_cause2str(code).decode()
    if name != "UNKNOWN":
        by_code[name] = code
by_name = {n: lib.switch_channel_str2cause(n.encode()) for n in json.loads(sys.argv[2])}
print(json.dumps({"by_code": by_code, "by_name": by_name}))
"""


def test_the_table_is_the_installed_switchs() -> None:
    """The switch's own cause chart, read from its library in a child process (nothing of
    the switch runs in the test process): the same 82 names with the same codes, both ways."""
    lib = need_switch().parent / "lib" / "libfreeswitch.so"
    if not lib.exists():
        pytest.skip(f"no {lib}")
    r = gevent.subprocess.run([sys.executable, "-c", _DUMP, str(lib),
                               json.dumps(list(SWITCH_CALL_CAUSES))],
                              capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["by_code"] == dict(SWITCH_CALL_CAUSES)
    assert got["by_name"] == dict(SWITCH_CALL_CAUSES)


def _cli(node: Node, *argv: str) -> subprocess.CompletedProcess[str]:
    r = gevent.subprocess.run([sys.executable, "-m", "callctl", *argv, "--config",
                               str(node.daemon.config)], capture_output=True, text=True,
                              timeout=30, cwd=REPO, env={"PYTHONPATH": str(REPO),
                                                         "PATH": "/usr/bin:/bin"})
    return r  # type: ignore[no-any-return]


@pytest.mark.parametrize("cause", ["SUBSCRIBER_ABSENT", "NO_ROUTE_DESTINATION",
                                   "USER_NOT_REGISTERED"])
def test_hangup_with_a_cause_the_old_table_refused(node: Node, cause: str) -> None:
    call = node.call()
    assert call.wait_answered(10)
    wait_for("the greeting", call.heard, 10)
    r = _cli(node, "hangup", call.uuid or "", "--cause", cause)
    assert r.returncode == 0, r.stderr
    assert call.wait_hangup(10) == cause and call.hangup_by == "switch"
    end = wait_for("call.end", lambda: [e for e in node.daemon.events("call.end")
                                        if e.get("call_uuid") == call.uuid], 10)[0]
    assert end["cause"] == cause
