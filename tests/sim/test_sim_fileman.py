"""``api uuid_fileman <uuid> pause`` over the real ESL socket: FreeSWITCH 1.10's reply bodies
(mod_commands ``uuid_fileman_function``), the toggle (``switch_ivr_process_fh``), what the
caller hears while paused (silence frames, no advance) and ``uuid_break`` on a paused file
(``switch_ivr_play_file`` checks CF_BREAK before the pause)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from simwire import EslClient
from test_sim_outbound import Daemon, _tone, connected, make_switch, sendmsg_play

from callctl.sim.switch import SimCall, Switch


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    yield d
    d.server.stop()


@pytest.fixture
def switch(daemon: Daemon) -> Iterator[Switch]:
    sw = make_switch(daemon.port)
    yield sw
    sw.stop()


def _api(cli: EslClient, line: str) -> bytes:
    return cli.command(f"api {line}").body


def _answered(switch: Switch, daemon: Daemon) -> tuple[SimCall, EslClient]:
    call: SimCall = switch.place_call("5000")
    cli = connected(daemon, "myevents", "event plain PLAYBACK_START PLAYBACK_STOP")
    cli.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
    return call, cli


def test_replies_usage_unknown_uuid_and_no_file(switch: Switch, daemon: Daemon) -> None:
    call, cli = _answered(switch, daemon)
    assert _api(cli, "uuid_fileman") == b"-USAGE: <uuid> <var>\n"   # GETVAR_SYNTAX: as in FS
    assert _api(cli, f"uuid_fileman {call.uuid}") == b"-USAGE: <uuid> <var>\n"
    # "No Such Channel!" in the 2012 source; 1.10.12's mod_commands says "No such channel!"
    # for every uuid_* command captured (PROTOCOL.md §4), so the emulator does too
    assert _api(cli, "uuid_fileman 00000000-dead-beef-0000-000000000000 pause") == \
        b"-ERR No such channel!\n"
    assert _api(cli, f"uuid_fileman {call.uuid} pause") == b"-ERR No File Handle!\n"
    call.hangup()


def test_pause_toggles_silence_then_continues_where_it_stopped(
        switch: Switch, daemon: Daemon, tmp_path: Path) -> None:
    wav = tmp_path / "reply.wav"
    _tone(wav, 2.0)
    call, cli = _answered(switch, daemon)
    sendmsg_play(cli, wav, "p1")
    cli.wait_for(lambda f: f.name == "PLAYBACK_START")
    gevent.sleep(0.05)                                  # ~0.4 s of media at speed 8
    assert _api(cli, f"uuid_fileman {call.uuid} pause") == b"+OK\n"
    gevent.sleep(0.15)                                  # ~1.2 s paused: longer than what's left
    first = call.heard()
    assert len(first) == 1 and first[0].paused and not first[0].interrupted
    assert not any(f.name == "PLAYBACK_STOP" for f in cli.frames if f.is_event)
    assert _api(cli, f"uuid_fileman {call.uuid} pause") == b"+OK\n"   # toggles back
    stop = cli.wait_for(lambda f: f.name == "PLAYBACK_STOP", timeout=5)
    assert stop.ev("Playback-Status") == "done"
    a, b = call.heard()
    assert a.source == b.source == str(wav) and b.start > a.end and not b.interrupted
    played = (a.end - a.start) + (b.end - b.start)      # the whole file, nothing repeated
    assert played == pytest.approx(2.0 / 8, abs=0.06)
    call.hangup()


def test_break_stops_a_paused_file_and_the_next_file_starts_unpaused(
        switch: Switch, daemon: Daemon, tmp_path: Path) -> None:
    wav = tmp_path / "reply.wav"
    _tone(wav, 4.0)
    short = tmp_path / "next.wav"
    _tone(short, 0.5)
    call, cli = _answered(switch, daemon)
    sendmsg_play(cli, wav, "p1")
    cli.wait_for(lambda f: f.name == "PLAYBACK_START")
    gevent.sleep(0.05)
    assert _api(cli, f"uuid_fileman {call.uuid} pause") == b"+OK\n"
    gevent.sleep(0.05)
    assert _api(cli, f"uuid_break {call.uuid}") == b"+OK\n"
    stop = cli.wait_for(lambda f: f.name == "PLAYBACK_STOP")
    assert stop.ev("Playback-Status") == "break"
    [cut] = call.heard()
    assert cut.paused and cut.interrupted                # the pause was the stop
    assert _api(cli, f"uuid_fileman {call.uuid} pause") == b"-ERR No File Handle!\n"
    sendmsg_play(cli, short, "p2")                        # a new file handle: not paused
    cli.wait_for(lambda f: f.name == "PLAYBACK_STOP" and f.ev("Playback-File-Path")
                 == str(short), timeout=5)
    assert call.heard()[-1].source == str(short) and not call.heard()[-1].paused
    call.hangup()
