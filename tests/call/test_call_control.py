"""CallControl: the exact command each action puts on the call's socket (PROTOCOL.md §2.5, §4,
§5.2), the typed errors, and the playback contract against the emulated switch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest
from test_call_faults import CONNECT, event, ok, read_command
from test_call_session import DID, Rig, make_cfg, session_for, write_wav

from callctl.call.control import (
    CallCommandRefused,
    CallControl,
    CallControlTimeout,
    CallControlUsage,
    CallGone,
)
from callctl.esl.adapter import EslEvent, OutboundConnection, OutboundListener
from callctl.metrics import Metrics

U = "11111111-2222-3333-4444-555555555555"


class Captured:
    """A CallControl on a real socket whose far end records commands and answers them."""

    def __init__(self, replies: dict[str, bytes]) -> None:
        self.commands: list[str] = []
        self.replies = replies
        self.control = gevent.event.AsyncResult()
        self.stop = gevent.event.Event()

        def handler(sock: Any, addr: Any) -> None:
            conn = OutboundConnection(addr, sock, command_timeout=0.5)
            conn.connect()
            self.control.set(CallControl(conn, U, timeout_s=0.5))
            self.stop.wait(10)
            conn.stop(exit_timeout=0.2)

        self.listener = OutboundListener("127.0.0.1", 0, handler)
        self.listener.start()
        self.g = gevent.spawn(self._switch)

    def _switch(self) -> None:
        s = gevent.socket.create_connection(("127.0.0.1", self.listener.port))
        while cmd := read_command(s):
            text = cmd.decode().strip()
            if text == "connect":
                s.sendall(CONNECT)
                continue
            self.commands.append(text)
            for prefix, reply in self.replies.items():
                if text.startswith(prefix):
                    if reply:
                        s.sendall(reply)
                    break
            else:
                s.sendall(ok() if not text.startswith("api") else api("+OK\n"))
        s.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.stop(timeout=1)
        self.g.kill()


def api(body: str) -> bytes:
    b = body.encode()
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(b), b)


@pytest.fixture
def cap() -> Iterator[Captured]:
    c = Captured({"api uuid_getvar": api("_undef_"), "api uuid_record": api("-ERR Cannot "
                  "record session!\n"), "api uuid_send_dtmf": b""})
    yield c
    c.close()


def test_exact_command_lines(cap: Captured) -> None:
    cc: CallControl = cap.control.get(timeout=3)
    cc.play("/var/lib/callctl/playback/a b.wav", "ev-1")
    cc.stop_playback()
    cc.hangup("USER_BUSY")
    cc.transfer("1000")
    cc.transfer("2000 XML sales")
    cc.transfer("sip:agent@10.0.0.9")
    cc.bridge("user/1001")
    cc.setvar("callctl_route", "front_desk")
    assert cc.getvar("nothing") is None
    cc.audio_fork_start("ws://127.0.0.1:8041/fork/x?token=t", 16000,
                        {"call_id": U, "did": "+1555 123", "lang": "한국어"})
    cc.audio_fork_stop(text={"event": "bye"})
    cc.audio_fork_start("ws://h/f", 8000, bidi_rate=16000)
    assert cap.commands == [
        "sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
        "execute-app-arg: /var/lib/callctl/playback/a b.wav\nevent-lock: true\nEvent-UUID: ev-1",
        f"api uuid_break {U} all",
        "sendmsg\ncall-command: hangup\nhangup-cause: USER_BUSY",
        f"api uuid_transfer {U} 1000 XML default",
        f"api uuid_transfer {U} 2000 XML sales",
        "sendmsg\ncall-command: execute\nexecute-app-name: bridge\n"
        "execute-app-arg: sofia/external/agent@10.0.0.9",
        "sendmsg\ncall-command: execute\nexecute-app-name: bridge\nexecute-app-arg: user/1001",
        f"api uuid_setvar {U} callctl_route front_desk",
        f"api uuid_getvar {U} nothing",
        f"api uuid_audio_fork {U} start ws://127.0.0.1:8041/fork/x?token=t mono 16k callctl "
        f"'{{\"call_id\":\"{U}\",\"did\":\"+1555 123\",\"lang\":\"한국어\"}}'",
        f"api uuid_audio_fork {U} stop callctl '{{\"event\":\"bye\"}}'",
        f"api uuid_audio_fork {U} start ws://h/f mono 8k callctl '{{}}' true true 16000",
    ]


def test_refused_timeout_and_usage_errors(cap: Captured) -> None:
    cc: CallControl = cap.control.get(timeout=3)
    with pytest.raises(CallCommandRefused) as e:
        cc.record_start("/var/lib/callctl/rec/x.wav")
    assert "Cannot record" in e.value.reply
    for bad in (lambda: cc.hangup("not a cause"), lambda: cc.send_dtmf("5; rm"),
                lambda: cc.play("/a\nexecute-app-name: x", "e"),
                lambda: cc.audio_fork_start("ws://x", 16000, {"t": "it's"}),
                lambda: cc.audio_fork_start("ws://x", 11025),
                lambda: cc.audio_fork_start("ws://x", 8000, bidi_rate=0),
                lambda: cc.transfer("1000 XML a b"), lambda: cc.setvar("a b", "c")):
        with pytest.raises(CallControlUsage):
            bad()
    with pytest.raises(CallControlTimeout):
        cc.send_dtmf("123")                     # the switch never answers this one
    with pytest.raises(CallGone):               # ... so the socket was closed
        cc.stop_playback()


def test_answer_waits_for_channel_answer_and_fails_on_hangup() -> None:
    c = Captured({"sendmsg\ncall-command: execute\nexecute-app-name: answer":
                  ok() + event("CHANNEL_HANGUP", uuid=U, extra="Hangup-Cause: ORIGINATOR_CANCEL")})
    try:
        cc: CallControl = c.control.get(timeout=3)
        with pytest.raises(CallGone):
            cc.answer()
    finally:
        c.close()


def esl_events(rig: Rig) -> list[EslEvent]:
    return [e for e in rig.recorders[0].events if isinstance(e, EslEvent)]


def test_playback_contract_with_emulator(tmp_path: Path, metrics: Metrics) -> None:
    """play() returns after +OK; events carry our Application-UUID; stop_playback() breaks."""
    rig = Rig(make_cfg(tmp_path), metrics)
    long = write_wav(tmp_path / "long.wav", 5.0)
    try:
        call = rig.call(DID)
        assert call.wait_answered(3)
        s = session_for(rig, call)
        with gevent.Timeout(5):
            while not rig.recorders or "PLAYBACK_STOP" not in rig.recorders[0].names():
                gevent.sleep(0.02)
        ev_uuid = str(uuid.uuid4())
        s.control.play(str(long), ev_uuid)
        with gevent.Timeout(3):
            while not any(e.headers.get("Application-UUID") == ev_uuid
                          and e.name == "CHANNEL_EXECUTE" for e in esl_events(rig)):
                gevent.sleep(0.01)
        gevent.sleep(0.3)
        s.control.stop_playback()
        with gevent.Timeout(3):
            while not any(e.headers.get("Application-UUID") == ev_uuid
                          and e.name == "CHANNEL_EXECUTE_COMPLETE" for e in esl_events(rig)):
                gevent.sleep(0.01)
        stops = [e for e in esl_events(rig) if e.name == "PLAYBACK_STOP"]
        assert stops[-1].headers.get("Playback-Status") == "break"
        assert call.heard()[-1].source.endswith("long.wav") and call.heard()[-1].interrupted
        call.hangup()
        assert call.wait_hangup(5)
    finally:
        rig.close()
