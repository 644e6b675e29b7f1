"""Barge-ins over streamed bot audio (jambonz mod_audio_fork bidirectional stream): a reply
paced close to real time reaches the caller in stretches a few frames apart; a killAudio in
such a gap still cuts the reply (``Media.stream_interrupted``), callers wait on the joined
reply (``callers.join_stream``), and the barge-in is measured; audio that comes back after a
kill (a daemon's pause) makes the cut a pause. Real WebSocket on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gevent
import numpy as np
import pytest
from mediakit import RecordingSignals, WsConn, WsServer, wait_until

from callctl.bench import measure
from callctl.sim import callers, corpus
from callctl.sim.interfaces import Heard
from callctl.sim.media import STREAM_GAP_S, Media, new_media

BIDI = ["mono", "8k", "audio_fork", "{}", "true", "true", "8000"]


@pytest.fixture
def server() -> Iterator[WsServer]:
    srv = WsServer()
    yield srv
    srv.stop()


@pytest.fixture
def streaming(tmp_path: Path, server: WsServer) -> Iterator[tuple[Media, RecordingSignals,
                                                                  WsConn]]:
    sig = RecordingSignals()
    m = new_media(sig, temp_dir=str(tmp_path), idle_frames=True)   # send_silence_when_idle
    m.start()
    try:
        assert m.fork_api(["start", server.url(), *BIDI]) == "+OK Success\n"
        conn = server.wait_conn()
        wait_until(lambda: sig.custom("mod_audio_fork::connect"))
        yield m, sig, conn
    finally:
        m.stop()


def _audio(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype("<i2").tobytes()


def _streams(m: Media) -> list[Heard]:
    return [h for h in m.heard() if h.source == "stream"]


def _dry_for(m: Media, seconds: float) -> bool:
    s = _streams(m)
    return bool(s) and time.monotonic() - s[-1].end > seconds


def _kill(sig: RecordingSignals, conn: WsConn) -> None:
    n = len(sig.custom("mod_audio_fork::kill_audio"))
    conn.send_text('{"type":"killAudio"}')
    wait_until(lambda: len(sig.custom("mod_audio_fork::kill_audio")) > n)


def test_kill_in_an_underrun_gap_cuts_the_reply(
        streaming: tuple[Media, RecordingSignals, WsConn]) -> None:
    m, sig, conn = streaming
    conn.send_bytes(_audio(0.3))
    wait_until(lambda: _dry_for(m, 0.05))          # ran dry: more of the reply is on its way
    _kill(sig, conn)
    assert [h.interrupted for h in _streams(m)] == [True]


def test_kill_long_after_the_stream_ended_cuts_nothing(
        streaming: tuple[Media, RecordingSignals, WsConn]) -> None:
    m, sig, conn = streaming
    conn.send_bytes(_audio(0.2))
    wait_until(lambda: _dry_for(m, STREAM_GAP_S + 0.15))   # the reply ended by itself
    _kill(sig, conn)
    conn.send_bytes(_audio(0.2))                   # a new reply, then its own stop_play
    wait_until(lambda: len(_streams(m)) == 2)
    assert m.fork_api(["stop_play"]) == "+OK Success\n"
    assert [h.interrupted for h in _streams(m)] == [False, True]


@dataclass
class _Call:
    """The caller's side of one emulated channel (``callers.SimCallLike``) over a Media."""

    media: Media

    def dtmf(self, digit: str) -> None:
        raise AssertionError("not used")

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.media.stop()

    def wait_answered(self, timeout: float) -> bool:
        return True

    def heard(self) -> list[Heard]:
        return self.media.heard()


def test_caller_barges_in_over_a_reply_that_underran(
        streaming: tuple[Media, RecordingSignals, WsConn]) -> None:
    """The reply comes as 0.4 s pieces 0.1 s apart: no single stretch is 1 s long, the
    joined reply is; the caller talks over it after 1 s, the bot kills it, the barge-in is
    measured on the joined reply."""
    m, sig, conn = streaming
    over = corpus.noise("cough", seed=5, lead_s=0.0, tail_s=0.1)
    caller = callers.Caller([callers.barge_in(over, after_s=1.0, timeout_s=5.0)])
    run = gevent.spawn(caller.run, _Call(m))

    def reply() -> None:
        for _ in range(8):
            conn.send_bytes(_audio(0.4))
            gevent.sleep(0.5)

    bot = gevent.spawn(reply)
    try:
        rec = wait_until(lambda: [r for r in caller.log if r.kind == "barge_in"], timeout=6.0)[0]
        assert rec.ok and rec.speech_start is not None
        gevent.sleep(max(0.0, rec.speech_start + 0.15 - time.monotonic()))   # the bot reacts
        _kill(sig, conn)
        bot.kill()
        run.join(timeout=5)
        raw = _streams(m)
        assert len(raw) >= 3 and max(h.end - h.start for h in raw) < 0.6   # it did underrun
        joined = callers.join_stream(m.heard(), STREAM_GAP_S)
        assert len(joined) == 1 and joined[0].interrupted
        assert rec.speech_start - joined[0].start >= 1.0
        lat = callers.barge_in_latencies(caller.log, joined)
        assert lat[0] is not None and 0.1 <= lat[0] < 1.0
        spoken = [measure.Spoken(rec.speech_start, rec.speech_end or rec.end, "noise")]
        assert measure.false_bargeins(spoken, joined)["noise"] == (1, 1)
    finally:
        bot.kill()
        run.kill()


def _chirp(seconds: float) -> np.ndarray:
    """Audio whose every 20 ms frame differs (a rising tone)."""
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * (200 + 400 * t) * t) * 6000).astype("<i2")


def _cut_after(m: Media, sig: RecordingSignals, conn: WsConn, reply: np.ndarray,
               seconds: float) -> int:
    """Stream ``reply``, killAudio after ~``seconds``; the index of the last frame heard."""
    conn.send_bytes(reply.tobytes())
    wait_until(lambda: bool(_streams(m)) and _streams(m)[0].end - _streams(m)[0].start
               >= seconds)
    _kill(sig, conn)
    h = _streams(m)[0]
    return round((h.end - h.start) / 0.02)


def test_audio_that_comes_back_after_a_kill_was_a_pause(
        streaming: tuple[Media, RecordingSignals, WsConn]) -> None:
    """A daemon pauses a stream with killAudio and sends the unheard audio again: the caller
    heard the bot stop and go on, so the cut stretch is recorded paused, not interrupted."""
    m, sig, conn = streaming
    reply = _chirp(1.0)
    last = _cut_after(m, sig, conn, reply, 0.3)
    gevent.sleep(0.3)                                            # the caller's "uh huh"
    conn.send_bytes(reply[(last - 1) * 160:].tobytes())          # again from ~the cut
    wait_until(lambda: len(_streams(m)) == 2)
    first, second = _streams(m)
    assert first.paused and not first.interrupted and second.start > first.end
    # the bench counts it as a pause the caller sat through, not a false barge-in
    assert measure._continuations(m.heard()) == {m.heard().index(first): second}


@pytest.mark.parametrize("after", ["other", "silence"])
def test_other_audio_after_a_kill_leaves_it_a_cut(
        streaming: tuple[Media, RecordingSignals, WsConn], after: str) -> None:
    m, sig, conn = streaming
    _cut_after(m, sig, conn, _chirp(1.0), 0.3)
    conn.send_bytes(bytes(8000) if after == "silence" else _audio(0.5))
    wait_until(lambda: len(_streams(m)) == 2)
    assert [(h.interrupted, h.paused) for h in _streams(m)] == [(True, False), (False, False)]


def test_audio_that_comes_back_off_the_frame_grid_was_a_pause(
        streaming: tuple[Media, RecordingSignals, WsConn]) -> None:
    """The daemon frames each piece of a reply on its own, so after a piece whose length is
    not a whole number of 20 ms frames its frames straddle the module's: audio re-sent after
    a pause starts between two frames the caller heard. Still the same audio coming back."""
    m, sig, conn = streaming
    reply = _chirp(1.0)
    last = _cut_after(m, sig, conn, reply, 0.3)
    gevent.sleep(0.3)
    conn.send_bytes(reply[(last - 1) * 160 + 50:].tobytes())     # again, off the grid
    wait_until(lambda: len(_streams(m)) == 2)
    first, _second = _streams(m)
    assert first.paused and not first.interrupted


def _mark_events(conn: WsConn) -> list[tuple[str, str]]:
    out = []
    for t in conn.texts():
        msg = json.loads(t)
        if msg.get("type") == "mark":
            out.append((msg["data"]["name"], msg["data"]["event"]))
    return out


def test_after_a_kill_the_next_markers_played_report_nothing(
        streaming: tuple[Media, RecordingSignals, WsConn]) -> None:
    """As jambonz does: a killAudio reports the pending marks cleared and keeps the names of
    those already in the stream; the next markers to reach playout consume them first,
    silently, so every later name is reported one marker late (m2 when m3's marker plays)
    and the last one not at all."""
    m, sig, conn = streaming
    conn.send_bytes(_audio(0.3))
    conn.send_text('{"type":"mark","data":{"name":"m1"}}')
    conn.send_bytes(_audio(0.3))                       # m1's marker is now in the stream
    wait_until(lambda: bool(_streams(m)))
    _kill(sig, conn)
    wait_until(lambda: ("m1", "cleared") in _mark_events(conn))
    for name in ("m2", "m3"):
        conn.send_bytes(_audio(0.1))
        conn.send_text(json.dumps({"type": "mark", "data": {"name": name}}))
    conn.send_bytes(_audio(0.2))
    wait_until(lambda: ("m2", "playout") in _mark_events(conn))
    wait_until(lambda: _dry_for(m, 0.1))
    assert _mark_events(conn) == [("m1", "cleared"), ("m2", "playout")]


def test_a_mark_with_no_audio_after_it_is_reported_once_the_stream_is_empty(
        streaming: tuple[Media, RecordingSignals, WsConn]) -> None:
    m, _sig, conn = streaming
    conn.send_bytes(_audio(0.3))
    conn.send_text('{"type":"mark","data":{"name":"end"}}')
    wait_until(lambda: ("end", "playout") in _mark_events(conn))
    assert _dry_for(m, 0.0)                           # only once the audio had played
