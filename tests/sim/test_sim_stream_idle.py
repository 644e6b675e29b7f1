"""The precondition of jambonz bidirectional streaming, as measured on FreeSWITCH 1.10.12: the
module plays the stream (and echoes its marks) only into frames the channel writes. A parked
channel writes none while nothing plays unless ``send_silence_when_idle`` was set when its
media came up (``switch_ivr_park`` reads it once); a playback writes frames while it runs.
No wall-clock assertion: "nothing heard" is checked over a number of media-clock ticks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gevent
import numpy as np
import pytest
from mediakit import RecordingSignals, WsConn, WsServer, wait_until

from callctl.sim import api
from callctl.sim.media import Media, new_media
from callctl.sim.switch import Switch, SwitchConfig

BIDI = ["mono", "8k", "audio_fork", "{}", "true", "true", "8000"]
MARK = '{"type":"mark","data":{"name":"m1"}}'


class TickTap:
    """Counts the media clock's ticks (one per 20 ms frame of media time)."""

    def __init__(self) -> None:
        self.ticks = 0

    def on_frame(self, read: object, write: object, t: float) -> None:
        self.ticks += 1

    def wait(self, n: int) -> None:
        target = self.ticks + n
        wait_until(lambda: self.ticks >= target, timeout=30)


@pytest.fixture
def server() -> Iterator[WsServer]:
    srv = WsServer()
    yield srv
    srv.stop()


def _streaming(tmp_path: Path, server: WsServer, idle_frames: bool
               ) -> tuple[Media, RecordingSignals, WsConn, TickTap]:
    sig = RecordingSignals()
    m = new_media(sig, speed=4, temp_dir=str(tmp_path), idle_frames=idle_frames)
    tap = TickTap()
    m.add_tap(tap)
    m.start()
    assert m.fork_api(["start", server.url(), *BIDI]) == "+OK Success\n"
    conn = server.wait_conn()
    wait_until(lambda: sig.custom("mod_audio_fork::connect"))
    return m, sig, conn, tap


def _audio(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype("<i2").tobytes()


def _streams(m: Media) -> list[object]:
    return [h for h in m.heard() if h.source == "stream"]


def _playouts(conn: WsConn) -> list[str]:
    return [x for x in conn.texts() if "playout" in x]


def test_a_channel_that_writes_no_frames_plays_no_stream_and_echoes_no_mark(
        tmp_path: Path, server: WsServer) -> None:
    m, _, conn, tap = _streaming(tmp_path, server, idle_frames=False)
    try:
        conn.send_bytes(_audio(0.5))
        conn.send_text(MARK)
        tap.wait(75)                      # 1.5 s of media time: three times the audio
        assert _streams(m) == [] and _playouts(conn) == []
        # a playback writes frames: the buffered stream is heard over it, the mark comes back
        player = gevent.spawn(m.play, "tone_stream://%(2000,0,440)")
        wait_until(lambda: _playouts(conn), timeout=30)
        assert _streams(m)
        player.kill()
    finally:
        m.stop()


def test_idle_frames_carry_the_stream_and_killaudio_still_cuts_it(
        tmp_path: Path, server: WsServer) -> None:
    m, sig, conn, _ = _streaming(tmp_path, server, idle_frames=True)
    try:
        conn.send_bytes(_audio(0.3))
        conn.send_text(MARK)
        wait_until(lambda: _playouts(conn), timeout=30)
        assert len(_streams(m)) == 1
        conn.send_bytes(_audio(10.0))
        wait_until(lambda: len(_streams(m)) == 2, timeout=30)
        conn.send_text('{"type":"killAudio"}')
        wait_until(lambda: sig.custom("mod_audio_fork::kill_audio"))
        wait_until(lambda: m.heard()[-1].interrupted, timeout=30)
    finally:
        m.stop()


PLANS: dict[str, str] = {}


def _parked(sw: Switch, plan: str) -> tuple[str, Media]:
    PLANS[plan] = plan
    call = sw.place_call(plan)
    media = call.media
    assert isinstance(media, Media)
    wait_until(lambda: "CHANNEL_PARK" in call.event_names)
    return call.uuid, media


def _turn_of_the_park_loop(sw: Switch, uuid: str) -> None:
    """The park loop served a message (a short broadcast) and went round again."""
    ch = sw.channel(uuid)
    assert ch is not None
    n = ch.event_names.count("PLAYBACK_STOP")
    assert api.execute(sw, "uuid_broadcast", f"{uuid} tone_stream://%(40,0,440) aleg") \
        .startswith("+OK")
    wait_until(lambda: ch.event_names.count("PLAYBACK_STOP") > n, timeout=30)


@pytest.fixture
def switch() -> Iterator[Switch]:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=4.0, dialplan=PLANS))
    sw.start()
    yield sw
    sw.stop()


def test_park_reads_send_silence_when_idle_once_when_the_media_comes_up(
        switch: Switch) -> None:
    # set in the dialplan before the answer: the park loop writes silence frames
    _, on = _parked(switch, "set send_silence_when_idle=400; answer; park")
    wait_until(lambda: on.idle_frames)
    # not set: no frames while idle; setting it once the park loop runs is too late
    uuid, off = _parked(switch, "answer; park")
    assert api.execute(switch, "uuid_setvar", f"{uuid} send_silence_when_idle -1") \
        .startswith("+OK")
    ch = switch.channel(uuid)
    assert ch is not None and ch.variables["send_silence_when_idle"] == "-1"
    _turn_of_the_park_loop(switch, uuid)
    assert not off.idle_frames
    # parked before the answer (the socket app): set before answering, it takes effect
    uuid, late = _parked(switch, "set x=1; park")
    assert api.execute(switch, "uuid_setvar", f"{uuid} send_silence_when_idle -1") \
        .startswith("+OK")
    assert api.execute(switch, "uuid_answer", uuid).startswith("+OK")
    wait_until(lambda: late.idle_frames)
    # zero is off, as in FreeSWITCH (atoi)
    uuid, zero = _parked(switch, "set send_silence_when_idle=0; answer; park")
    _turn_of_the_park_loop(switch, uuid)
    assert not zero.idle_frames
