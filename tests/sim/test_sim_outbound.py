"""Outbound ESL (``socket … async full``) beyond the captured sessions: connect failures,
the daemon letting go of a live call, linger variants, myevents isolation between calls,
bgapi ownership, restricted (non-``full``) sockets, barge-in with ``uuid_break all``."""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import pytest
from gevent.server import StreamServer
from simwire import EslClient

from callctl.sim import api
from callctl.sim.switch import SimCall, Switch, SwitchConfig


class Daemon:
    """A fake daemon: an outbound-socket server whose accepted sockets are handed to tests."""

    def __init__(self) -> None:
        self.accepted: gevent.queue.Queue[EslClient] = gevent.queue.Queue()
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = int(self.server.server_port)

    def _handle(self, sock: Any, addr: Any) -> None:
        cli = EslClient("", 0, sock=sock)
        self.accepted.put(cli)
        cli.wait_eof(30)

    def next(self, timeout: float = 5.0) -> EslClient:
        return self.accepted.get(timeout=timeout)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    yield d
    d.server.stop()


def make_switch(daemon_port: int, extra: str = "async full") -> Switch:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=8.0, dialplan={
        "5000": f"socket 127.0.0.1:{daemon_port} {extra}",
        "5001": f"socket 127.0.0.1:1|127.0.0.1:{daemon_port} async full",
        "5002": "socket 127.0.0.1:1 async full",
    }))
    sw.start()
    return sw


@pytest.fixture
def switch(daemon: Daemon) -> Iterator[Switch]:
    sw = make_switch(daemon.port)
    yield sw
    sw.stop()


def connected(daemon: Daemon, *commands: str) -> EslClient:
    cli = daemon.next()
    cli.send("connect\n\n")
    cli.wait_frames(1)
    for c in commands:
        cli.command(c)
    return cli


def reply_text(cli: EslClient, line: str) -> str:
    return dict(cli.command(line).headers).get("Reply-Text", "")


def test_connect_failure_hangs_up_and_fallback_host_works(switch: Switch,
                                                          daemon: Daemon) -> None:
    failed = switch.place_call("5002")
    assert failed.wait_hangup(10) == "NORMAL_TEMPORARY_FAILURE"
    assert "CHANNEL_PARK" not in failed.event_names
    ok = switch.place_call("5001")
    cli = connected(daemon)
    assert dict(cli.frames[0].headers)["Unique-ID"] == ok.uuid
    assert dict(cli.frames[0].headers)["variable_socket_host"] == "127.0.0.1"
    ok.hangup()
    assert ok.wait_hangup(5) == "NORMAL_CLEARING"


def test_first_command_other_than_connect_gets_no_reply(switch: Switch,
                                                        daemon: Daemon) -> None:
    call = switch.place_call("5000")
    cli = daemon.next()
    cli.send("myevents\n\n")
    gevent.sleep(0.1)
    assert cli.frames == []
    cli.send("connect\n\n")
    assert cli.wait_frames(1)[0].headers[-4:] == [
        ("Content-Type", "command/reply"), ("Reply-Text", "%2BOK%0A"),
        ("Socket-Mode", "async"), ("Control", "full")]
    call.hangup()


def test_daemon_closing_the_socket_hangs_up_normal_clearing(switch: Switch,
                                                           daemon: Daemon) -> None:
    call = switch.place_call("5000")
    cli = connected(daemon, "myevents")
    assert call.wait_answered(0.2) is False
    cli.close()
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    names = call.event_names
    assert names.index("CHANNEL_UNPARK") < names.index("CHANNEL_EXECUTE_COMPLETE", names.index(
        "CHANNEL_UNPARK")) < names.index("CHANNEL_HANGUP")


def test_no_linger_disconnects_after_hangup_complete(switch: Switch, daemon: Daemon) -> None:
    call = switch.place_call("5000")
    cli = connected(daemon, "myevents")
    call.hangup()
    assert cli.wait_eof()
    kinds = [f.name or f.ctype for f in cli.frames[2:]]
    assert kinds[-2:] == ["CHANNEL_HANGUP_COMPLETE", "text/disconnect-notice"]
    assert dict(cli.frames[-1].headers)["Content-Disposition"] == "disconnect"
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    assert "CHANNEL_DESTROY" not in kinds


def test_plain_linger_keeps_channel_until_exit(switch: Switch, daemon: Daemon) -> None:
    call = switch.place_call("5000")
    cli = connected(daemon, "myevents", "linger")
    call.hangup()
    notice = cli.wait_for(lambda f: dict(f.headers).get("Content-Disposition") == "linger")
    assert dict(notice.headers)["Linger-Time"] == "-1"
    gevent.sleep(0.2)
    assert call.wait_hangup(0.01) is None                      # not destroyed yet
    assert api.execute(switch, "show", "channels count") == "\n1 total.\n"
    # commands still work while lingering
    assert cli.command(f"api uuid_exists {call.uuid}").body == b"true"
    assert reply_text(cli, "exit") == "+OK bye"
    assert cli.wait_eof()
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    assert all(f.name != "CHANNEL_DESTROY" for f in cli.frames)
    assert "CHANNEL_DESTROY" in call.event_names


def test_linger_with_seconds_closes_later(switch: Switch, daemon: Daemon) -> None:
    call = switch.place_call("5000")
    cli = connected(daemon, "myevents")
    assert reply_text(cli, "linger 1") == "+OK will linger 1 seconds"
    call.hangup()
    notice = cli.wait_for(lambda f: dict(f.headers).get("Content-Disposition") == "linger")
    assert dict(notice.headers)["Linger-Time"] == "1"
    assert not cli.eof
    assert cli.wait_eof(5)
    assert dict(cli.frames[-1].headers)["Content-Disposition"] == "disconnect"
    assert call.wait_hangup(5) == "NORMAL_CLEARING"


def test_myevents_isolates_calls_and_bgapi_is_owned(switch: Switch, daemon: Daemon) -> None:
    a = switch.place_call("5000")
    ca = connected(daemon, "myevents", "event plain BACKGROUND_JOB")
    b = switch.place_call("5000")
    cb = connected(daemon, "myevents", "event plain BACKGROUND_JOB")
    a.dtmf("1")
    b.dtmf("2")
    r = ca.command("bgapi uuid_exists " + a.uuid)
    job = dict(r.headers)["Job-UUID"]
    ev = ca.wait_for(lambda f: f.name == "BACKGROUND_JOB")
    assert ev.ev("Job-UUID") == job and ev.ev("Job-Owner-UUID") == a.uuid
    assert ev.ev_body == b"true"
    ca.wait_for(lambda f: f.name == "DTMF")
    cb.wait_for(lambda f: f.name == "DTMF")
    gevent.sleep(0.05)
    for cli, call in ((ca, a), (cb, b)):
        assert {f.ev("Unique-ID") for f in cli.frames if f.is_event and
                f.name != "BACKGROUND_JOB"} == {call.uuid}
    assert not any(f.name == "BACKGROUND_JOB" for f in cb.frames)
    for call in (a, b):
        call.hangup()


def test_restricted_socket_without_full() -> None:
    d = Daemon()
    sw = make_switch(d.port, extra="async")
    try:
        call = sw.place_call("5000")
        cli = connected(d)
        assert cli.frames[0].headers[-1] == ("Control", "single-channel")
        assert cli.command("api status").headers[1] == ("Reply-Text", "-ERR command not found")
        assert reply_text(cli, "linger") == "-ERR command not found"
        assert reply_text(cli, "myevents") == "+OK Events Enabled"
        assert reply_text(cli, "getvar sip_req_user") == "5000"
        call.hangup()
        assert call.wait_hangup(5) == "NORMAL_CLEARING"
    finally:
        sw.stop()
        d.server.stop()


def _tone(path: Path, seconds: float) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(5000 * math.sin(i / 3)))
                               for i in range(int(seconds * 8000))))


def sendmsg_play(cli: EslClient, path: Path, event_uuid: str) -> None:
    cli.command(f"sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
                f"execute-app-arg: {path}\nevent-uuid: {event_uuid}\nevent-lock: true")


def test_barge_in_with_uuid_break_all(switch: Switch, daemon: Daemon, tmp_path: Path) -> None:
    long_wav = tmp_path / "long.wav"
    _tone(long_wav, 8.0)
    call: SimCall = switch.place_call("5000")
    cli = connected(daemon, "myevents", "event plain PLAYBACK_START PLAYBACK_STOP")
    cli.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
    sendmsg_play(cli, long_wav, "p1")
    sendmsg_play(cli, long_wav, "p2")               # queued behind p1
    cli.wait_for(lambda f: f.name == "PLAYBACK_START")
    assert cli.command(f"api uuid_break {call.uuid} all").body == b"+OK\n"
    stop = cli.wait_for(lambda f: f.name == "PLAYBACK_STOP")
    assert stop.ev("Playback-Status") == "break"
    done = cli.wait_for(lambda f: f.name == "CHANNEL_EXECUTE_COMPLETE"
                        and f.ev("Application-UUID") == "p1")
    assert done.ev("Application-Response") == "FILE PLAYED"
    gevent.sleep(0.3)
    assert not any(f.ev("Application-UUID") == "p2" for f in cli.frames if f.is_event)
    heard = call.heard()
    assert len(heard) == 1 and heard[0].interrupted
    call.hangup()
    assert call.wait_hangup(5) == "NORMAL_CLEARING"


def test_pre_answer_dtmf_terminator_and_loops(switch: Switch, daemon: Daemon,
                                              tmp_path: Path) -> None:
    wav = tmp_path / "long.wav"
    _tone(wav, 6.0)
    short = tmp_path / "short.wav"
    _tone(short, 0.1)
    call = switch.place_call("5000")
    cli = connected(daemon, "myevents", "event plain PLAYBACK_STOP CHANNEL_PROGRESS_MEDIA")
    cli.command("sendmsg\ncall-command: execute\nexecute-app-name: pre_answer")
    early = cli.wait_for(lambda f: f.name == "CHANNEL_PROGRESS_MEDIA")
    assert early.ev("Answer-State") == "early"
    assert not call.wait_answered(0.05)
    cli.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
    assert call.wait_answered(5)
    sendmsg_play(cli, wav, "long")
    cli.wait_for(lambda f: f.name == "CHANNEL_EXECUTE" and f.ev("Application-UUID") == "long")
    gevent.sleep(0.1)
    call.dtmf("1")                                      # not a terminator: keeps playing
    gevent.sleep(0.1)
    assert not any(f.name == "PLAYBACK_STOP" for f in cli.frames)
    call.dtmf("*")                                      # default playback_terminators
    stop = cli.wait_for(lambda f: f.name == "PLAYBACK_STOP")
    assert stop.ev("Playback-Status") == "break"
    cli.command(f"sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
                f"execute-app-arg: {short}\nloops: 3\nevent-uuid: looped")
    cli.wait_for(lambda f: f.name == "CHANNEL_EXECUTE_COMPLETE"
                 and f.ev("variable_current_loop") == "3")
    runs = [f for f in cli.frames if f.name == "CHANNEL_EXECUTE_COMPLETE"
            and f.ev("Application-UUID") == "looped"]
    assert [f.ev("variable_total_loops") for f in runs] == ["3", "3", "3"]
    call.hangup()
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
