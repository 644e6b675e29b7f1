"""Fork WebSocket server over real loopback sockets: accept, refuse, frames, bad input."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable

import gevent
import gevent.socket
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, TextMessage

from callctl.media.audio import (
    AudioFrame,
    AudioRateSuspect,
    ForkClosed,
    ForkConnected,
    ForkDrained,
    ForkText,
    Inbox,
    InboxFull,
    InboxItem,
)
from callctl.media.forkserver import ForkRequestError, ForkServer, parse_fork_target
from callctl.metrics import Metrics

Client = Callable[[str], object]
UUID = "8b1c4f0e-2a7d-4c55-9e0b-0d3c6a1f22e2"


def drain(inbox: Inbox, timeout: float = 1.0) -> list[InboxItem]:
    out: list[InboxItem] = []
    item = inbox.get(timeout)
    while item is not None:
        out.append(item)
        item = inbox.get(0.2)
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_accepts_registered_call_selects_subprotocol_and_delivers_frames(
        fork_server: ForkServer, fork_client: Callable, metrics: Metrics) -> None:
    url, inbox = fork_server.register(UUID)
    assert url.startswith(fork_server.public_url + f"/fork/{UUID}?token=")
    c = fork_client(url)
    resp = c.connect()
    assert isinstance(resp, AcceptConnection)
    assert resp.subprotocol == "audio.drachtio.org"
    c.text('{"fsreal":"start","n":1}')
    samples = (np.arange(1600) % 200 - 100).astype(np.int16)
    c.stream(samples)
    c.text('{"event":"dtmf"}')
    c.binary(b"")  # graceful-shutdown
    c.close()
    items = drain(inbox)
    assert isinstance(items[0], ForkConnected)
    assert items[0].metadata == {"fsreal": "start", "n": 1}
    assert items[0].reconnect is False
    control = [i for i in items if not isinstance(i, AudioFrame)]
    assert [type(i) for i in control] == [ForkConnected, ForkText, ForkDrained, ForkClosed]
    got = np.concatenate([i.samples for i in items if isinstance(i, AudioFrame)])
    assert np.array_equal(got, samples)
    assert control[-1].code == 1000  # type: ignore[union-attr]


@pytest.mark.parametrize("target,status,reason", [
    (f"/fork/{UUID}?token=wrongtokenwrongtoken", 403, "bad_token"),
    (f"/fork/{UUID}", 403, "missing_token"),
    ("/fork/0000-unknown-call?token=abcdefghijkl", 404, "unknown_call"),
    ("/something/else", 404, "bad_path"),
])
def test_refuses_bad_token_missing_token_unknown_call(
        fork_server: ForkServer, fork_client: Callable, metrics: Metrics,
        target: str, status: int, reason: str) -> None:
    _url, inbox = fork_server.register(UUID)
    c = fork_client(target)
    resp = c.connect()
    assert isinstance(resp, RejectConnection)
    assert resp.status_code == status
    assert value(metrics, "callctl_ws_rejected_total", reason=reason) == 1
    assert inbox.get(0.05) is None


def test_unregistered_call_is_refused(fork_server: ForkServer, fork_client: Callable,
                                      metrics: Metrics) -> None:
    url, _ = fork_server.register(UUID)
    fork_server.unregister(UUID)
    resp = fork_client(url).connect()
    assert isinstance(resp, RejectConnection) and resp.status_code == 404


def test_non_websocket_bytes_get_400_and_close(fork_server: ForkServer,
                                               metrics: Metrics) -> None:
    s = gevent.socket.create_connection(fork_server.address, timeout=3)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-not-http\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    assert data.startswith(b"HTTP/1.1 400")
    assert value(metrics, "callctl_protocol_errors_total", source="fork",
                 kind="not_websocket") == 1


def test_plain_http_get_without_upgrade_is_refused(fork_server: ForkServer) -> None:
    s = gevent.socket.create_connection(fork_server.address, timeout=3)
    s.sendall(b"GET /fork/x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 400")


def test_oversized_message_closes_with_1009(fork_server: ForkServer, fork_client: Callable,
                                           metrics: Metrics) -> None:
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text("{}")
    c.binary(b"\x00" * (fork_server.max_message_bytes + 2))
    events = c.read_events()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1009
    assert value(metrics, "callctl_protocol_errors_total", source="fork", kind="oversized") == 1
    closed = [i for i in drain(inbox) if isinstance(i, ForkClosed)]
    assert closed and closed[0].code == 1009


def test_fragmented_message_is_reassembled_and_bounded(
        fork_server: ForkServer, fork_client: Callable, metrics: Metrics) -> None:
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text("{}")
    c.binary(b"\x01\x00" * 100, finished=False)
    c.binary(b"\x02\x00" * 60, finished=True)
    # Many small fragments adding up past the bound: closed, not buffered forever.
    for _ in range(fork_server.max_message_bytes // 4096 + 2):
        c.binary(b"\x00" * 4096, finished=False)
    events = c.read_events()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1009
    frames = [i for i in drain(inbox) if isinstance(i, AudioFrame)]
    assert len(frames) == 1 and len(frames[0].samples) == 160
    assert list(frames[0].samples[99:101]) == [1, 2]


def test_bad_fragment_sequence_is_a_protocol_error(
        fork_server: ForkServer, fork_client: Callable, metrics: Metrics) -> None:
    url, _ = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    # A continuation frame with no message started (masked, opcode 0, FIN): RFC 6455 error.
    c.sock.sendall(b"\x80\x82abcd" + bytes(x ^ y for x, y in zip(b"hi", b"ab", strict=True)))
    events = c.read_events()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1002
    assert value(metrics, "callctl_protocol_errors_total", source="fork",
                 kind="ws_protocol") == 1


def test_odd_byte_counts_are_carried_over(fork_server: ForkServer,
                                          fork_client: Callable) -> None:
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text("{}")
    samples = np.arange(-500, 500, dtype=np.int16)
    data = samples.astype("<i2").tobytes()
    for off in range(0, len(data), 321):  # 321-byte messages split samples in two
        c.binary(data[off:off + 321])
    c.close()
    got = np.concatenate([i.samples for i in drain(inbox) if isinstance(i, AudioFrame)])
    assert np.array_equal(got, samples)


def test_text_that_is_not_json_is_kept_raw_and_counted(
        fork_server: ForkServer, fork_client: Callable, metrics: Metrics) -> None:
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text("hello, not json")
    c.binary(b"\x00\x00" * 160)
    c.close()
    items = drain(inbox)
    assert isinstance(items[0], ForkConnected)
    assert items[0].metadata is None and items[0].raw_metadata == "hello, not json"
    assert any(isinstance(i, AudioFrame) for i in items)
    assert value(metrics, "callctl_protocol_errors_total", source="fork", kind="metadata") == 1


def test_stereo_takes_caller_channel(fork_server: ForkServer, fork_client: Callable) -> None:
    url, inbox = fork_server.register(UUID, mix="stereo")
    c = fork_client(url)
    c.connect()
    c.text("{}")
    left = np.arange(320, dtype=np.int16)
    right = np.full(320, -7, dtype=np.int16)
    inter = np.empty(640, dtype=np.int16)
    inter[0::2], inter[1::2] = left, right
    c.stream(inter, frame_bytes=640)
    c.close()
    got = np.concatenate([i.samples for i in drain(inbox) if isinstance(i, AudioFrame)])
    assert np.array_equal(got, left)


def test_declared_16k_is_resampled_to_8k(fork_server: ForkServer, fork_client: Callable) -> None:
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text(json.dumps({"sampleRate": 16000}))
    t = np.arange(16000) / 16000
    c.stream((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), frame_bytes=640)
    c.close()
    frames = [i for i in drain(inbox) if isinstance(i, AudioFrame)]
    n = sum(len(f.samples) for f in frames)
    assert all(f.rate == 8000 for f in frames)
    assert 7000 <= n <= 8000  # one second at 8 kHz, minus the resampler's delay


def test_unsupported_declared_rate_closes_with_1003(
        fork_server: ForkServer, fork_client: Callable, metrics: Metrics) -> None:
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text(json.dumps({"sampleRate": 44100}))
    events = c.read_events()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1003
    assert value(metrics, "callctl_protocol_errors_total", source="fork",
                 kind="audio_format") == 1
    assert not any(isinstance(i, AudioFrame) for i in drain(inbox))


def test_audio_faster_than_declared_rate_is_flagged(metrics: Metrics,
                                                     fork_client: Callable,
                                                     fork_server: ForkServer) -> None:
    """A 16 kHz stream on a fork registered for 8 kHz: twice the bytes per second."""
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text("{}")
    c.stream(np.zeros(16000 * 3, dtype=np.int16), realtime=True, frame_bytes=640)
    c.close()
    suspects = [i for i in drain(inbox) if isinstance(i, AudioRateSuspect)]
    assert len(suspects) == 1
    assert suspects[0].observed_bytes_per_s > 1.5 * suspects[0].expected_bytes_per_s


def test_reconnect_replaces_the_old_connection(fork_server: ForkServer,
                                               fork_client: Callable) -> None:
    url, inbox = fork_server.register(UUID)
    a = fork_client(url)
    a.connect()
    a.text("{}")
    b = fork_client(url)
    assert isinstance(b.connect(), AcceptConnection)
    b.text("{}")
    events = a.read_events(1.0)
    assert isinstance(events[-1], CloseConnection)
    items = drain(inbox)
    connected = [i for i in items if isinstance(i, ForkConnected)]
    assert [c.reconnect for c in connected] == [False, True]
    assert fork_server.send_text(UUID, '{"type":"killAudio"}')
    got = b.read_events(0.5)
    assert any(isinstance(e, TextMessage) and e.data == '{"type":"killAudio"}' for e in got)


def test_send_text_and_binary_reach_the_fork(fork_server: ForkServer,
                                             fork_client: Callable) -> None:
    url, _ = fork_server.register(UUID)
    assert fork_server.send_text(UUID, "x") is False  # not connected yet
    c = fork_client(url)
    c.connect()
    c.text("{}")
    gevent.sleep(0.05)
    assert fork_server.send_text(UUID, '{"type":"killAudio"}')
    assert fork_server.send_binary(UUID, b"\x01\x00" * 160)
    fork_server.unregister(UUID)
    kinds = [type(e).__name__ for e in c.read_events()]
    assert kinds[:3] == ["TextMessage", "BytesMessage", "CloseConnection"]


def test_fork_that_never_sends_audio_stays_connected_and_is_closed_on_unregister(
        fork_server: ForkServer, fork_client: Callable) -> None:
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text("{}")
    assert isinstance(inbox.get(1.0), ForkConnected)
    assert inbox.get(0.3) is None
    assert fork_server.connected(UUID)
    fork_server.unregister(UUID)
    assert isinstance(c.read_events()[-1], CloseConnection)


def test_inbox_drops_oldest_audio_and_counts(metrics: Metrics) -> None:
    inbox = Inbox(3, metrics)
    for i in range(5):
        inbox.put_audio(AudioFrame(np.full(160, i, dtype=np.int16), 8000, float(i)))
    inbox.put_control(ForkDrained(9.0))
    inbox.put_audio(AudioFrame(np.full(160, 5, dtype=np.int16), 8000, 10.0))
    # stream order; the overflow dropped the oldest frames, never the control event
    got = [inbox.get(0) for _ in range(4)]
    assert [int(f.samples[0]) if isinstance(f, AudioFrame) else type(f).__name__
            for f in got] == [3, 4, "ForkDrained", 5]
    assert inbox.get(0) is None and len(inbox) == 0
    assert inbox.dropped == 3
    assert value(metrics, "callctl_audio_frames_dropped_total") == 3
    for i in range(64):
        inbox.put_control(ForkText(str(i), 0.0))
    with pytest.raises(InboxFull):
        inbox.put_control(ForkText("one too many", 0.0))


# ---------------------------------------------------------------------------------------------
# Fuzz: the request-target parser.
# ---------------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300) | st.builds(
    lambda u, t, q: f"/fork/{u}?token={t}{q}",
    st.text(max_size=70), st.text(max_size=140), st.text(max_size=40)))
def test_fuzz_parse_fork_target(target: str) -> None:
    try:
        parsed = parse_fork_target(target)
    except ForkRequestError as e:
        assert e.status in (403, 404, 414) and e.reason
    else:
        assert target.startswith("/fork/" + parsed.call_uuid.split("%")[0][:1])


def test_parse_fork_target_examples() -> None:
    t = parse_fork_target(f"/fork/{UUID}?token=abcDEF123_-xyz&x=1")
    assert (t.call_uuid, t.token) == (UUID, "abcDEF123_-xyz")
    assert parse_fork_target(f"/fork/{UUID}").token is None
    for bad in ("/fork/", "/fork/a/b", "fork/a", f"/fork/{UUID}?token=a&token=b",
                "/fork/..?token=abcdefgh", "/fork/a?token=short"):
        with pytest.raises(ForkRequestError):
            parse_fork_target(bad)


def test_from_config_and_register_validation(metrics: Metrics) -> None:
    import dataclasses
    import socket

    from callctl.config import MediaConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = dataclasses.replace(MediaConfig(), listen_port=port,
                              public_url=f"ws://127.0.0.1:{port}")
    server = ForkServer.from_config(cfg, metrics)
    server.start()
    try:
        assert server.address == ("127.0.0.1", port)
        url, _inbox = server.register(UUID)
        assert url.startswith(f"ws://127.0.0.1:{port}/fork/{UUID}?token=")
        with pytest.raises(ValueError):
            server.register("bad uuid/with slash")
        with pytest.raises(ValueError):
            server.register(UUID, mix="quad")
    finally:
        server.stop()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.dictionaries(
    st.sampled_from(["sampleRate", "mix", "uuid", "x"]),
    st.integers() | st.text(max_size=10) | st.none() | st.booleans(), max_size=4
).map(json.dumps))
def test_fuzz_parse_metadata(text: str) -> None:
    from callctl.media.audio import AudioFormatError, MetadataError, parse_metadata

    try:
        meta = parse_metadata(text)
    except (MetadataError, AudioFormatError):
        return
    assert isinstance(meta, dict)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=12),
       st.sampled_from([1, 2]))
def test_fuzz_pcm_decoder_chunking(data: bytes, cuts: list[int], channels: int) -> None:
    from callctl.media.audio import PcmDecoder

    dec = PcmDecoder(8000, channels, 8000)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    out = [dec.decode(data[a:b]) for a, b in itertools.pairwise(bounds)]
    got = np.concatenate(out) if out else np.zeros(0, np.int16)
    whole = np.frombuffer(data[:len(data) - len(data) % (2 * channels)], dtype="<i2")
    assert np.array_equal(got, whole[0::channels])


def test_garbage_after_handshake_ends_only_that_connection(
        fork_server: ForkServer, fork_client: Callable, metrics: Metrics) -> None:
    url, inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text("{}")
    c.sock.sendall(bytes(range(256)) * 4)  # unmasked, reserved opcodes...: not RFC 6455
    events = c.read_events()
    assert isinstance(events[-1], CloseConnection) and events[-1].code in (1002, 1007, 1009)
    assert value(metrics, "callctl_protocol_errors_total", source="fork",
                 kind="ws_protocol") == 1
    # the server and the call's registration live on: the fork can come back
    again = fork_client(url)
    assert isinstance(again.connect(), AcceptConnection)
    again.text("{}")
    again.close()
    connected = [i for i in drain(inbox) if isinstance(i, ForkConnected)]
    assert [x.reconnect for x in connected] == [False, True]


def test_peer_that_ignores_our_close_is_cut_off(fork_server: ForkServer,
                                                fork_client: Callable) -> None:
    url, _inbox = fork_server.register(UUID)
    c = fork_client(url)
    c.connect()
    c.text("{}")
    fork_server.unregister(UUID)  # server sends Close 1000; this peer never answers
    start = time.monotonic()
    c.sock.settimeout(5)
    while c.sock.recv(4096):
        pass
    assert time.monotonic() - start < 4.5  # EOF: the server dropped the connection



def test_an_internal_error_ends_only_that_fork_with_1011(
        fork_server: ForkServer, fork_client: Callable, metrics: Metrics,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception we did not foresee (injected: our metadata handling fails) closes that
    fork with Close 1011, is counted and logged with the call, tells the call (ForkClosed)
    and leaves the server serving."""
    def a_bug_of_ours(*args: object) -> None:
        raise RuntimeError("a bug of ours")

    url, inbox = fork_server.register(UUID)
    monkeypatch.setattr(fork_server, "_connected", a_bug_of_ours)
    c = fork_client(url)
    assert isinstance(c.connect(), AcceptConnection)
    c.text("{}")
    events = c.read_events()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1011
    assert value(metrics, "callctl_protocol_errors_total", source="fork", kind="internal") == 1
    closed = [i for i in drain(inbox) if isinstance(i, ForkClosed)]
    assert closed and closed[0].code == 1011
    monkeypatch.undo()
    again = fork_client(url)
    assert isinstance(again.connect(), AcceptConnection)              # still serving
    again.text("{}")
    assert isinstance(drain(inbox)[0], ForkConnected)
