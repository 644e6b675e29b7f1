"""Broken config on a running daemon (``Daemon.run()`` in this process, emulated FreeSWITCH,
real Vosk, espeak, real Redis): SIGHUP with a config file that is not TOML, has a bad value or
an unknown key, is gone, or routes calls to a flow the daemon did not load at start-up, is
refused with a one-line error naming the file or key; the daemon keeps its config, the call
in progress takes its turn, and a good SIGHUP afterwards still applies."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from resume_rig import DID, InProcDaemon, dial_keys, wait_for, wait_quiet

from callctl.sim.switch import Switch, SwitchConfig

OTHER_DID = "+15551239999"

ROUTES = f'[[routes]]\ndid = "{DID}"\nflow = "account"\n'

#: (file text or None = file removed, what the one-line error must say)
BROKEN = [
    ("[[routes]\ndid = 1\n", "callctl.toml: not valid TOML"),
    ("[daemon]\nmax_calls = -3\n" + ROUTES, "daemon.max_calls: -3 is not allowed"),
    ("[daemon]\nmax_callz = 3\n" + ROUTES, "daemon.max_callz: unknown setting"),
    (None, "callctl.toml: config file not found"),
    # a flow not loaded at start-up (on disk or not) would fail every call on its route
    (ROUTES + f'[[routes]]\ndid = "{OTHER_DID}"\nflow = "front_desk"\n',
     "routes[1].flow: flow 'front_desk' is not loaded (loaded: account)"),
    ('[routing]\nunknown_action = "default"\ndefault_flow = "nope"\n' + ROUTES,
     "routing.default_flow: flow 'nope' is not loaded"),
]


class Logs:
    """What the daemon printed (structlog's default: stdout, captured by capsys)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.lines: list[str] = []

    def wait(self, *words: str, timeout: float = 5) -> str:
        """The first new line holding every word (waits for it)."""
        def seen() -> bool:
            self.lines += self.capsys.readouterr().out.splitlines()
            return any(all(w in ln for w in words) for ln in self.lines)
        assert wait_for(seen, timeout), (words, self.lines[-20:])
        line = next(ln for ln in self.lines if all(w in ln for w in words))
        self.lines = self.lines[self.lines.index(line) + 1:]
        return line


@pytest.fixture
def node(tmp_path: Path, redis_url: str, vosk_engine: Any
         ) -> Iterator[tuple[InProcDaemon, Switch]]:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0))
    sw.start()
    rig = InProcDaemon(sw, tmp_path, redis_url, vosk_engine, "node-a",
                       f"reload{uuidlib.uuid4().hex[:8]}")
    try:
        assert rig.wait_ready()
        sw.cfg.dialplan[DID] = rig.socket_app            # type: ignore[index]
        sw.cfg.dialplan[OTHER_DID] = rig.socket_app      # type: ignore[index]
        yield rig, sw
    finally:
        rig.stop()
        sw.stop()


def hup(rig: InProcDaemon, path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(text)
    rig.daemon.config_path = str(path)
    rig.daemon._enqueue("HUP")          # what the SIGHUP handler does


@pytest.mark.slow
def test_broken_config_on_sighup_is_refused_and_the_call_goes_on(
        node: tuple[InProcDaemon, Switch], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    daemon, sw = node
    logs = Logs(capsys)
    call = sw.place_call(DID, "+15557654321", "PCMU")
    assert call.wait_answered(10)
    assert wait_quiet(call, 1, 0.5, 20)                      # the greeting
    before = daemon.daemon.cfg
    conf = tmp_path / "callctl.toml"
    for text, says in BROKEN:
        hup(daemon, conf, text)
        logs.wait("daemon.reload_failed", says)
        assert daemon.daemon.cfg is before
    # the call in progress takes its turn
    dial_keys(call, "12345678")
    assert wait_quiet(call, 2, 0.5, 20), call.heard()
    assert daemon.daemon.registry.get(call.uuid) is not None and call.hangup_cause is None
    # a good reload still applies: a new route answers
    hup(daemon, conf, ROUTES + f'[[routes]]\ndid = "{OTHER_DID}"\nflow = "account"\n')
    logs.wait("daemon.reloaded", "routes")
    assert daemon.daemon.cfg.route_for(OTHER_DID) is not None
    other = sw.place_call(OTHER_DID, "+15557654322", "PCMU")
    assert other.wait_answered(10)
    assert wait_quiet(other, 1, 0.5, 20)
    for c in (call, other):
        c.hangup()
        assert c.wait_hangup(10) is not None
    assert wait_for(lambda: len(daemon.daemon.registry) == 0, 10)
    assert not daemon.g.dead                            # Daemon.run() is still serving

