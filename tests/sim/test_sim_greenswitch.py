"""greenswitch 0.0.19 (what the daemon uses) works against the emulator: ``InboundESL``
auth/api/events, and an outbound app built on ``OutboundSession`` that receives a call,
answers, plays a WAV generated here and hangs up."""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest
from gevent.server import StreamServer
from greenswitch.esl import InboundESL, OutboundSession

from callctl.sim.switch import Switch, SwitchConfig


def write_wav(path: Path, seconds: float = 0.4, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * i
                                                                        / rate)))
                               for i in range(int(seconds * rate))))


@pytest.fixture
def switch() -> Iterator[Switch]:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=4.0))
    sw.start()
    yield sw
    sw.stop()


def test_inbound_esl_auth_api_and_events(switch: Switch) -> None:
    esl = InboundESL("127.0.0.1", switch.esl_port, "ClueCon")
    gevent.with_timeout(5, esl.connect)
    try:
        status = gevent.with_timeout(5, esl.send, "api status")
        assert status.data.startswith("UP ") and "is ready" in status.data
        seen: list[dict[str, Any]] = []
        got = gevent.event.Event()

        def on_hangup_complete(event: Any) -> None:
            seen.append(event.headers)
            got.set()

        esl.register_handle("CHANNEL_HANGUP_COMPLETE", on_hangup_complete)
        reply = gevent.with_timeout(5, esl.send, "event plain CHANNEL_HANGUP_COMPLETE")
        assert reply.data == "+OK event listener enabled plain"
        call = switch.place_call("park", caller_id="+15550002222")
        assert call.wait_answered(5)
        call.hangup()
        assert got.wait(5)
        assert seen[0]["Unique-ID"] == call.uuid
        assert seen[0]["Caller-Caller-ID-Number"] == "+15550002222"
        assert seen[0]["Hangup-Cause"] == "NORMAL_CLEARING"
    finally:
        gevent.with_timeout(5, esl.stop)


def test_wrong_password_is_refused(switch: Switch) -> None:
    esl = InboundESL("127.0.0.1", switch.esl_port, "nope")
    with pytest.raises(ValueError, match="Invalid password"):
        gevent.with_timeout(5, esl.connect)


def test_outbound_session_answers_plays_and_hangs_up(switch: Switch, tmp_path: Path) -> None:
    wav = tmp_path / "hello.wav"
    write_wav(wav)
    results: dict[str, Any] = {}
    done = gevent.event.Event()

    def app(sock: Any, addr: Any) -> None:
        session = OutboundSession(addr, sock)
        try:
            gevent.with_timeout(5, session.connect)
            results["uuid"] = session.uuid
            results["caller"] = session.caller_id_number
            results["did"] = session.session_data.get("Caller-Destination-Number")
            gevent.with_timeout(5, session.myevents)
            gevent.with_timeout(5, session.linger)
            gevent.with_timeout(5, session.answer)
            ev = gevent.with_timeout(10, session.playback, str(wav))
            results["play"] = ev.headers.get("Application-Response")
            gevent.with_timeout(5, session.hangup)
            gevent.sleep(0.2)
            results["lingering"] = session._lingering
        finally:
            gevent.with_timeout(5, session.stop)
            done.set()

    server = StreamServer(("127.0.0.1", 0), app)
    server.start()
    try:
        sw2 = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=4.0, dialplan={
            "7000": f"socket 127.0.0.1:{server.server_port} async full"}))
        sw2.start()
        try:
            call = sw2.place_call("7000", caller_id="+15550003333")
            assert done.wait(15)
            assert call.wait_hangup(5) == "NORMAL_CLEARING"
            assert results == {"uuid": call.uuid, "caller": "+15550003333", "did": "7000",
                               "play": "FILE PLAYED", "lingering": True}
            heard = call.heard()
            assert heard and heard[0].source == str(wav) and not heard[0].interrupted
            names = call.event_names
            assert names.index("CHANNEL_ANSWER") < names.index("PLAYBACK_START") < \
                names.index("CHANNEL_HANGUP") < names.index("CHANNEL_DESTROY")
        finally:
            sw2.stop()
    finally:
        server.stop()
