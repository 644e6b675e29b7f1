"""mod_audio_fork emulation against a real WebSocket server on loopback, checked against the
FreeSWITCH 1.10.12 captures (04 jambonz, 05 stereo, 07 drachtio)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import gevent
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediakit import UUID, RecordingSignals, WsServer, wait_until
from testkit import free_port

from callctl.sim import audiofork
from callctl.sim.audiofork import tokenize, uuid_audio_fork
from callctl.sim.media import Media, new_media

CAPTURE_HEADERS = ["Pragma", "Cache-Control", "Host", "Origin", "Upgrade", "Connection",
                   "Sec-WebSocket-Key", "Sec-WebSocket-Protocol", "Sec-WebSocket-Version"]


@pytest.fixture
def server() -> Iterator[WsServer]:
    srv = WsServer()
    yield srv
    srv.stop()


def _media(tmp_path: Path, speed: float = 1.0, variant: str = "jambonz",
           idle_frames: bool = False) -> tuple[Media, RecordingSignals]:
    sig = RecordingSignals()
    m = new_media(sig, speed=speed, fork_variant=variant, temp_dir=str(tmp_path),
                  idle_frames=idle_frames)
    m.start()
    return m, sig


def _tone(seconds: float, freq: float = 440.0, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def _frame_sizes_ok(frames: list[tuple[float, bytes]], size: int) -> bool:
    """Each message is everything buffered since the last write: normally one 20 ms frame,
    a multiple of it when the writer lagged (servers must not assume a fixed size)."""
    sizes = [len(d) for _, d in frames]
    return all(n % size == 0 and n for n in sizes) and sizes.count(size) >= 0.8 * len(sizes)


# -- tokenizer and api replies --------------------------------------------------------------
def test_tokenizer_blank_quotes_rest_of_line_and_delimiter_form() -> None:
    line = 'u1 start ws://h/p mono 16k asr {"a": 1, "b": 2}'
    assert tokenize(line, 7)[-1] == '{"a": 1, "b": 2}'            # drachtio: rest of line
    assert tokenize(line, 10)[6:] == ['{"a":', "1,", '"b":', "2}"]  # jambonz: split
    assert tokenize(line.replace(" asr", ""), 7)[5:] == ['{"a":', '1, "b": 2}']
    quoted = "u1 start ws://h/p mono 8k asr '{\"a\": 1}' true true 16000"
    assert tokenize(quoted, 10) == ["u1", "start", "ws://h/p", "mono", "8k", "asr",
                                    '{"a": 1}', "true", "true", "16000"]
    fsmrf = "^^|u1|start|ws://h/p|mono|16k|asr|'{\"a\": 1}'|true|false|"
    assert tokenize(fsmrf, 10) == ["u1", "start", "ws://h/p", "mono", "16k", "asr",
                                   '{"a": 1}', "true", "false"]   # trailing empty dropped
    assert tokenize("a   b ", 10) == ["a", "b"]                     # blank runs count as one
    assert tokenize("^^|a||b", 10) == ["a", "", "b"]
    assert tokenize(r"a\sb  c\'d", 10) == ["a b", "c'd"]


@given(st.text(max_size=80), st.integers(1, 12))
def test_tokenizer_never_fails(line: str, slots: int) -> None:
    out = tokenize(line, slots)
    assert len(out) <= slots and all(isinstance(t, str) for t in out)


@pytest.mark.parametrize(("variant", "capture"), [("jambonz", "04_audiofork"),
                                                  ("drachtio", "07_audiofork_drachtio")])
def test_api_replies_match_capture(tmp_path: Path, fixtures_dir: Path, variant: str,
                                   capture: str) -> None:
    replies = json.loads((fixtures_dir / f"{capture}_api_replies.json").read_text())
    m, _ = _media(tmp_path, variant=variant)
    try:
        def lookup(u: str) -> Media | None:
            return m if u == UUID else None

        assert uuid_audio_fork(UUID, lookup, variant) == replies["fork_usage_error"]
        assert uuid_audio_fork(f"{UUID} stop", lookup, variant) == \
            replies["fork_stop_when_not_running"]
        assert uuid_audio_fork("00000000-0000-0000-0000-000000000000 stop", lookup,
                               variant) == replies["fork_bogus_uuid"]
        closed = f"ws://127.0.0.1:{free_port()}/nolistener"
        assert uuid_audio_fork(f"{UUID} start {closed} mono 16k", lookup, variant) == \
            replies["fork_start_no_listener"]
        assert uuid_audio_fork(f"{UUID} start {closed} mono 16k", lookup, variant) == \
            "-ERR Operation Failed\n"                                 # bug already attached
        assert uuid_audio_fork(f"{UUID} stop", lookup, variant) == \
            replies["fork_stop_after_connect_failed"]
        assert uuid_audio_fork(f"{UUID} start {closed} quad 16k", lookup, variant) == ""
        assert uuid_audio_fork(f"{UUID} frobnicate", lookup, variant) == \
            "-ERR Operation Failed\n"
        stop_play = uuid_audio_fork(f"{UUID} stop_play", lookup, variant)
        assert stop_play == "-ERR Operation Failed\n"                # no bug / not drachtio
    finally:
        m.stop()


def test_connect_failed_reasons(tmp_path: Path) -> None:
    m, sig = _media(tmp_path, speed=4)
    rejecting, wrong_proto = WsServer(reject_status=403), WsServer(subprotocol="other")
    try:
        m.fork_api(["start", f"ws://127.0.0.1:{free_port()}/x", "mono", "8k", "a"])
        m.fork_api(["start", rejecting.url(), "mono", "8k", "b"])
        m.fork_api(["start", wrong_proto.url(), "mono", "8k", "c"])
        bodies = wait_until(lambda: (b := sig.custom("mod_audio_fork::connect_failed"))
                            and len(b) == 3 and b)
        assert sorted(bodies) == sorted(['{"reason":"Unable to connect"}',
                                         '{"reason":"HS: ws upgrade response not 101"}',
                                         '{"reason":"HS: PROTOCOL malformed"}'])
        assert sig.custom("mod_audio_fork::connect") == []
        assert m.fork_api(["stop", "b"]) == "+OK Success\n"    # the bug stayed attached
    finally:
        m.stop()
        rejecting.stop()
        wrong_proto.stop()


# -- handshake, metadata, audio frames -----------------------------------------------------
def test_handshake_metadata_then_realtime_frames(tmp_path: Path, server: WsServer) -> None:
    m, sig = _media(tmp_path)                  # real time: the cadence is the point here
    try:
        meta = '{"fsreal":"start","n":1}'
        assert m.fork_api(["start", server.url("/fsreal"), "mono", "16k", meta]) == \
            "+OK Success\n"
        conn = server.wait_conn()
        assert conn.header_names() == CAPTURE_HEADERS
        assert conn.request.subprotocols == ["audio.drachtio.org"]
        assert conn.request.target == "/fsreal"
        assert conn.request.host == "127.0.0.1"
        wait_until(lambda: len(conn.binaries()) >= 15)
        assert conn.frames[0][1:] == ("text", meta)            # metadata first
        frames = conn.binaries()
        assert _frame_sizes_ok(frames, 640)                    # 20 ms of 16 kHz L16 mono
        gaps = np.diff([t for t, _ in frames])
        assert 0.010 < float(np.mean(gaps)) < 0.040
        assert sig.custom("mod_audio_fork::connect") == [None]
        assert [n for n in sig.names()] == ["MEDIA_BUG_START"]
        assert sig.events[0][2] == {"Media-Bug-Function": "audio_fork",
                                    "Media-Bug-Target": "N/A"}
    finally:
        m.stop()
    wait_until(conn.closed.is_set)
    assert conn.close_code == 1000                             # hangup: Close 1000
    assert sig.names() == ["MEDIA_BUG_START", "MEDIA_BUG_STOP"]


def test_caller_speech_reaches_the_fork_as_little_endian_l16(tmp_path: Path,
                                                            server: WsServer) -> None:
    m, _ = _media(tmp_path, speed=4)
    try:
        m.fork_api(["start", server.url(), "mono", "8k"])
        conn = server.wait_conn()
        wait_until(lambda: len(conn.binaries()) >= 3)
        start, end = m.say(_tone(0.4))
        assert end - start == pytest.approx(0.1, abs=0.01)     # 0.4 s at speed 4
        wait_until(lambda: conn.binaries() and conn.binaries()[-1][0] > end + 0.05)
        frames = conn.binaries()
        assert _frame_sizes_ok(frames, 320)
        loud = [t for t, d in frames
                if np.abs(np.frombuffer(d, "<i2").astype(np.int32)).max() > 4000]
        assert len(loud) >= 15                                 # ~20 frames of tone
        assert start - 0.02 <= loud[0] <= start + 0.05
        assert loud[-1] <= end + 0.05
        assert m.caller_queued_s() == 0
    finally:
        m.stop()


def test_stereo_sends_nothing_while_silent_then_caller_left_bot_right(
        tmp_path: Path, server: WsServer) -> None:
    m, _ = _media(tmp_path, speed=4)
    try:
        m.fork_api(["start", server.url("/stereo"), "stereo", "16k", '{"fsreal":"stereo"}'])
        conn = server.wait_conn()
        gevent.sleep(0.15)                                     # ~30 frames of media time
        assert conn.binaries() == []
        assert conn.texts() == ['{"fsreal":"stereo"}']
        player = gevent.spawn(m.play, "tone_stream://%(1000,0,440);loops=-1")
        wait_until(lambda: len(conn.binaries()) >= 10)
        m.break_playback()
        assert player.get(timeout=5) == "break"
        frames = conn.binaries()
        assert _frame_sizes_ok(frames, 1280)                   # 16 kHz stereo
        pcm = np.frombuffer(b"".join(d for _, d in frames[3:]), "<i2").reshape(-1, 2)
        assert np.abs(pcm[:, 0]).max() < 50                    # caller silent (left)
        assert np.abs(pcm[:, 1]).max() > 3000                  # tone to the caller (right)
        n = len(conn.binaries())
        gevent.sleep(0.1)
        assert len(conn.binaries()) == n                       # silence again: no frames
    finally:
        m.stop()


# -- server messages -> CUSTOM events ------------------------------------------------------
SERVER_MESSAGES = [
    ('{"type":"transcription","data":{"text":"hello from fsreal","is_final":true}}',
     "transcription", '{"text":"hello from fsreal","is_final":true}'),
    ('{"type":"transfer","data":{"to":"1234"}}', "transfer", '{"to":"1234"}'),
    ('{"type":"error","data":{"code":42,"msg":"test error"}}', "error",
     '{"code":42,"msg":"test error"}'),
    ('{"type":"json","data":{"any":"thing"}}', "json", '{"type":"json","data":{"any":"thing"}}'),
    ('{"data": {"no": "type"}}', "json", '{"data":{"no":"type"}}'),
    ('{"type":"disconnect"}', "disconnect", None),
    ('{"type":"disconnect","data":{"why":"done"}}', "disconnect", '{"why":"done"}'),
    ('{"type":"killAudio"}', "kill_audio", None),
    ('{"type":"transcription"}', "transcription", None),
]


@pytest.mark.parametrize("variant", ["jambonz", "drachtio"])
def test_every_server_message_yields_its_event(tmp_path: Path, server: WsServer,
                                               variant: str) -> None:
    m, sig = _media(tmp_path, speed=4, variant=variant)
    try:
        m.fork_api(["start", server.url(), "mono", "16k"])
        conn = server.wait_conn()
        wait_until(lambda: sig.custom("mod_audio_fork::connect"))
        for text, _, _ in SERVER_MESSAGES:
            conn.send_text(text)
        conn.send_text('{"type":"bogusType","data":{}}')       # unsupported: no event
        conn.send_text("not json at all")                      # invalid: no event
        conn.send_text('{"type":"transfer","data":{"last":1}}')
        wait_until(lambda: '{"last":1}' in sig.custom("mod_audio_fork::transfer"))
        got = [(s.removeprefix("mod_audio_fork::"), b) for _, s, b in sig.customs[1:-1]]
        assert got == [(sub, body) for _, sub, body in SERVER_MESSAGES]
    finally:
        m.stop()


def test_play_audio_writes_the_file_and_stop_deletes_it(tmp_path: Path,
                                                        server: WsServer) -> None:
    m, sig = _media(tmp_path, speed=4)
    try:
        m.fork_api(["start", server.url(), "mono", "8k"])
        conn = server.wait_conn()
        pcm = _tone(0.2).astype("<i2").tobytes()
        for rate, ctype in [(8000, "raw"), (16000, "raw"), (11025, "raw"), (None, "wav")]:
            data = {"audioContentType": ctype, "sampleRate": rate,
                    "audioContent": base64.b64encode(pcm).decode(), "textContent": "hi"}
            if rate is None:
                del data["sampleRate"]
            conn.send_text(json.dumps({"type": "playAudio", "data": data}))
        bodies = wait_until(lambda: len(b := sig.custom("mod_audio_fork::play_audio")) == 4
                            and b)
        files = []
        for body, ext in zip(bodies, [".tmp.r8", ".tmp.r16", ".tmp.r16", ".tmp.wav"],
                             strict=True):
            assert body is not None
            parsed = json.loads(body)
            assert list(parsed)[-1] == "file" and "audioContent" not in parsed
            assert parsed["file"].startswith(f"{tmp_path}/{UUID}_")
            assert parsed["file"].endswith(ext)
            assert Path(parsed["file"]).read_bytes() == pcm
            files.append(parsed["file"])
        first = json.loads(str(bodies[0]))
        assert body_prefix(str(bodies[0])) == \
            '{"audioContentType":"raw","sampleRate":8000,"textContent":"hi","file":'
        counters = [int(f.rsplit("_", 1)[1].split(".")[0]) for f in files]
        assert counters == list(range(counters[0], counters[0] + 4))
        assert first["file"] == files[0]
        # The application plays the written file itself; it really is that audio.
        assert m.play(files[0]) == "done"
        assert m.fork_api(["stop"]) == "+OK Success\n"
        assert not any(Path(f).exists() for f in files)
    finally:
        m.stop()


def body_prefix(body: str) -> str:
    return body[: body.index('"file":') + len('"file":')]


def test_kill_audio_breaks_the_playing_file(tmp_path: Path, server: WsServer) -> None:
    m, sig = _media(tmp_path, speed=2)
    try:
        m.fork_api(["start", server.url(), "mono", "8k"])
        conn = server.wait_conn()
        player = gevent.spawn(m.play, "tone_stream://%(1000,0,440);loops=-1")
        wait_until(lambda: m.heard())
        conn.send_text('{"type":"killAudio"}')
        assert player.get(timeout=5) == "break"
        assert sig.custom("mod_audio_fork::kill_audio") == [None]
        assert m.heard()[-1].interrupted
    finally:
        m.stop()


# -- commands --------------------------------------------------------------------------------
def test_send_text_pause_resume_graceful_shutdown_and_stop(tmp_path: Path,
                                                          server: WsServer) -> None:
    m, sig = _media(tmp_path, speed=4)
    try:
        assert m.fork_api(["start", server.url(), "mono", "8k", "asr", '{"m":1}']) == \
            "+OK Success\n"
        conn = server.wait_conn()
        wait_until(lambda: len(conn.binaries()) >= 2)
        assert m.fork_api(["send_text", "asr", '{"event":"dtmf","digit":"5"}']) == \
            "+OK Success\n"
        assert m.fork_api(["send_text", '{"no":"bug"}']) == "-ERR Operation Failed\n"
        wait_until(lambda: len(conn.texts()) == 2)
        assert conn.texts() == ['{"m":1}', '{"event":"dtmf","digit":"5"}']
        assert m.fork_api(["pause", "asr"]) == "+OK Success\n"
        gevent.sleep(0.02)
        n = len(conn.binaries())
        gevent.sleep(0.1)
        assert len(conn.binaries()) <= n + 1                   # at most one in flight
        n = len(conn.binaries())
        gevent.sleep(0.05)
        assert len(conn.binaries()) == n
        assert m.fork_api(["resume", "asr"]) == "+OK Success\n"
        wait_until(lambda: len(conn.binaries()) >= n + 3)
        assert m.fork_api(["graceful-shutdown", "asr"]) == "+OK Success\n"
        wait_until(lambda: any(d == b"" for _, d in conn.binaries()))
        gevent.sleep(0.1)
        assert conn.binaries()[-1][1] == b""                   # nothing after the flush mark
        assert conn.close_code is None                         # socket kept open
        assert m.fork_api(["stop", "asr", '{"fsreal":"stop"}']) == "+OK Success\n"
        wait_until(conn.closed.is_set)
        assert conn.close_code == 1000
        assert conn.texts()[-1] != '{"fsreal":"stop"}'         # texts stop after graceful
        assert sig.custom("mod_audio_fork::disconnect") == []  # we closed: no event
    finally:
        m.stop()


def test_stop_sends_final_text_then_close_1000(tmp_path: Path, server: WsServer) -> None:
    m, sig = _media(tmp_path, speed=4)
    try:
        m.fork_api(["start", server.url(), "mono", "8k"])
        conn = server.wait_conn()
        assert m.fork_api(["stop", '{"fsreal":"stop"}']) == "+OK Success\n"
        wait_until(conn.closed.is_set)
        assert conn.texts()[-1] == '{"fsreal":"stop"}'
        assert conn.close_code == 1000
        assert m.fork_api(["stop"]) == "-ERR Operation Failed\n"
        assert sig.names() == ["MEDIA_BUG_START", "MEDIA_BUG_STOP"]
    finally:
        m.stop()


def test_server_close_fires_disconnect_and_keeps_the_bug(tmp_path: Path,
                                                        server: WsServer) -> None:
    m, sig = _media(tmp_path, speed=4)
    try:
        m.fork_api(["start", server.url(), "mono", "8k"])
        conn = server.wait_conn()
        wait_until(lambda: sig.custom("mod_audio_fork::connect"))
        conn.close(1000)
        wait_until(lambda: sig.custom("mod_audio_fork::disconnect") == [None])
        assert m.fork_api(["start", server.url(), "mono", "8k"]) == "-ERR Operation Failed\n"
        assert m.fork_api(["stop"]) == "+OK Success\n"
    finally:
        m.stop()


# -- jambonz bidirectional streaming -----------------------------------------------------
def test_bidirectional_stream_is_heard_and_marks_reported(tmp_path: Path,
                                                         server: WsServer) -> None:
    m, sig = _media(tmp_path, speed=4, idle_frames=True)   # send_silence_when_idle
    try:
        argv = ["start", server.url(), "mono", "8k", "asr", "{}", "true", "true", "16000"]
        assert m.fork_api(argv) == "+OK Success\n"
        conn = server.wait_conn()
        wait_until(lambda: sig.custom("mod_audio_fork::connect"))
        t = np.arange(16000 // 2) / 16000                       # 0.5 s at 16 kHz
        audio = (np.sin(2 * np.pi * 300 * t) * 6000).astype("<i2").tobytes()
        conn.send_bytes(audio[:1001])                           # odd split is carried over
        conn.send_bytes(audio[1001:])
        conn.send_text('{"type":"mark","data":{"name":"m1"}}')
        msg = wait_until(lambda: [x for x in conn.texts() if "playout" in x])
        assert msg == ['{"type": "mark", "data": {"name":"m1", "event": "playout"}}']
        gevent.sleep(0.05)                                     # the stream ran dry
        streams = [h for h in m.heard() if h.source == "stream"]
        assert len(streams) == 1
        assert 0.08 < streams[0].end - streams[0].start < 0.5  # ~0.5 s media at speed 4
        # playAudio is ignored while streaming.
        conn.send_text('{"type":"playAudio","data":{"audioContentType":"raw",'
                       '"sampleRate":8000,"audioContent":""}}')
        conn.send_bytes(audio * 4)
        conn.send_text('{"type":"mark","data":{"name":"m2"}}')
        wait_until(lambda: len([h for h in m.heard() if h.source == "stream"]) == 2)
        conn.send_text('{"type":"killAudio"}')
        wait_until(lambda: any("cleared" in x for x in conn.texts()))
        assert m.heard()[-1].interrupted
        assert sig.custom("mod_audio_fork::play_audio") == []
        assert m.fork_api(["stop_play"]) == "-ERR Operation Failed\n"   # bug is "asr"
    finally:
        m.stop()


def test_drachtio_discards_server_audio(tmp_path: Path, server: WsServer) -> None:
    m, sig = _media(tmp_path, speed=4, variant="drachtio")
    try:
        argv = ["start", server.url(), "mono", "8k", "asr", "{}", "true", "true", "16000"]
        assert m.fork_api(argv) == "+OK Success\n"       # extra tokens: 7th slot = rest
        conn = server.wait_conn()
        assert conn.texts() == [] or conn.texts()[0] == "{} true true 16000"
        wait_until(lambda: conn.texts())
        assert conn.texts()[0] == "{} true true 16000"
        conn.send_bytes(b"\x10\x20" * 4000)
        conn.send_text('{"type":"transfer","data":1}')
        wait_until(lambda: sig.custom("mod_audio_fork::transfer"))
        gevent.sleep(0.1)
        assert m.heard() == []
    finally:
        m.stop()


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
                     max_leaves=10)
_messages = st.one_of(
    st.text(),
    _json.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["playAudio", "killAudio", "mark", "clearMarks", "json",
                                  "transcription", "disconnect", "x"]),
         "data": _json | st.fixed_dictionaries(
             {"audioContentType": st.sampled_from(["raw", "wav", "mp3", 1]),
              "sampleRate": _json, "audioContent": st.text()})}).map(json.dumps),
)


@given(_messages, st.binary(max_size=64))
def test_fuzz_server_messages_never_crash(tmp_path_factory: pytest.TempPathFactory,
                                         text: str, data: bytes) -> None:
    """Peer garbage: each message either yields events or is ignored, never an exception."""
    sig = RecordingSignals()
    host = new_media(sig, temp_dir=str(tmp_path_factory.getbasetemp()))
    for bidi in (0, 16000):
        fork = audiofork.Fork(host, "b", "ws://127.0.0.1:1/", "mono", 8000, None, bidi)
        fork.state = audiofork.ForkState.CONNECTED      # as if the handshake were done
        fork.handle_text(text)
        fork.handle_binary(data * 50)
        out = fork.pull_stream(160)
        assert out is None or len(out) == 160
        for path in fork.files:
            Path(path).unlink()
    assert all(s.startswith("mod_audio_fork::") for _, s, _ in sig.customs)
    assert all(b is None or isinstance(b, str) for _, _, b in sig.customs)
