"""Garbage on one call's fork WebSocket, on a running daemon (emulated FreeSWITCH → daemon →
fork server, real sockets, real Whisper, real Redis), while a second call on the same daemon
asks for billing and is transferred. Every bad input gets its clear answer (HTTP status or
close code, counted); it ends at most that one connection; the other call's turn and the
daemon go on, and the abused call is still up until its caller hangs up."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import numpy as np
import pytest
from conversation_rig import Rig, rig_fixture
from forkclient import ForkClient
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    RejectConnection,
    TextMessage,
)

from callctl.media.audio import (
    AudioFormatError,
    AudioFrame,
    ForkClosed,
    MetadataError,
    parse_metadata,
)
from callctl.sim import callers
from callctl.sim.media import Media


def refused_status(address: tuple[str, int], target: str) -> int:
    ev = ForkClient(address, target).connect()
    assert isinstance(ev, RejectConnection), ev
    return ev.status_code


def close_after(address: tuple[str, int], target: str, *frames: Event | bytes) -> int | None:
    """Take over the fork at ``target`` (accepted), send ``frames`` (bytes go raw)."""
    peer = ForkClient(address, target)
    assert isinstance(peer.connect(), AcceptConnection)
    for f in frames:
        if isinstance(f, bytes):
            peer.sock.sendall(f)
        else:
            peer.send(f)
    return peer.close_code()


def too_fast(address: tuple[str, int], target: str, seconds: float = 2.3) -> None:
    """Declared 8 kHz mono, sent at four times that byte rate for ``seconds``."""
    peer = ForkClient(address, target)
    assert isinstance(peer.connect(), AcceptConnection)
    peer.send(TextMessage(data=json.dumps({"sampleRate": 8000, "mix": "mono"})))
    frame = (np.sin(np.arange(640) * 0.3) * 3000).astype("<i2").tobytes()   # 80 ms of 8 kHz
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peer.send(BytesMessage(data=frame))
        gevent.sleep(0.02)
    peer.send(CloseConnection(code=1000))
    assert peer.close_code() == 1000


def abuse(address: tuple[str, int], uuid: str, target: str) -> list[tuple[Any, ...]]:
    """One round of every kind of fork garbage; returns what the server answered."""
    s = gevent.socket.create_connection(address, timeout=5)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03not-http\r\n\r\n")
    head = s.recv(12)
    s.close()
    return [
        ("not_websocket", head),
        ("unknown_call", refused_status(address, "/fork/no-such-call?token=abcdefghijkl")),
        ("bad_token", refused_status(address, f"/fork/{uuid}?token=wrongwrongwrong")),
        ("bad_metadata", close_after(address, target, TextMessage(data='{"mix": ["stereo"]}'))),
        ("null_metadata", close_after(address, target, NULLS, BytesMessage(data=bytes(320)),
                                      CloseConnection(code=1000))),
        ("oversized", close_after(address, target, TextMessage(data="{}"),
                                  BytesMessage(data=b"\x01" * (64 * 1024 + 2)))),
        ("ws_garbage", close_after(address, target, TextMessage(data="{}"),
                                   bytes(range(256)) * 4)),
    ]


#: null format keys mean "not given": the registered rate and mix apply
NULLS = TextMessage(data='{"sampleRate": null, "mix": null}')


@pytest.fixture
def rig(tmp_path: Path, redis_url: str, whisper_engine: Any) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path, redis_url, whisper_engine)


@pytest.mark.slow
def test_fork_garbage_on_one_call_while_another_call_takes_its_turn(
        rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    abused, _ = rig.call([callers.wait_answer(), callers.pause(60)])
    with gevent.Timeout(10):
        while not rig.voice.forks.connected(abused.uuid):
            gevent.sleep(0.05)
    media = abused.media
    assert isinstance(media, Media) and len(media.forks.forks) == 1
    forks = media.forks.forks
    url = next(iter(forks.values())).url
    target = url[url.index("/fork/"):]
    address = rig.voice.forks.address

    done = False
    answers: list[tuple[Any, ...]] = []

    def attacker() -> None:
        too_fast(address, target)
        while not done:
            answers.extend(abuse(address, abused.uuid, target))
            gevent.sleep(0.1)

    g = gevent.spawn(attacker)
    call, caller = rig.call([
        callers.wait_answer(),
        callers.wait_for_bot(silence_s=0.6),
        callers.say("I would like to talk to billing please.", voice="piper"),
        callers.wait_for_bot(silence_s=0.6),
        callers.pause(1.0),
        callers.hangup(),
    ])
    cause = call.wait_hangup(40)
    done = True
    g.get(timeout=20)                        # the attacker itself raised nothing

    # the other call: greeting, the caller's words heard, transferred to billing
    assert cause is not None
    assert call.channel.profile["Destination-Number"] == "7001", caller.log
    assert len(call.heard()) >= 2
    assert rig.store.flush(5)
    turns = rig.store.get_turns(call.uuid)
    assert turns and "billing" in turns[0].transcript.lower()
    assert rig.sample("callctl_calls_total", {"route": "front_desk", "outcome": "transferred",
                                              "cause": "TRANSFERRED"}) == 1

    # every kind of garbage got its clear answer, every round
    expected: dict[str, set[Any]] = {
        "not_websocket": {b"HTTP/1.1 400"}, "unknown_call": {404}, "bad_token": {403},
        "bad_metadata": {1003}, "null_metadata": {1000}, "oversized": {1009},
        "ws_garbage": {1002, 1007, 1009}}
    assert {k for k, *_ in answers} == set(expected) and len(answers) >= len(expected)
    wrong = [(k, v) for k, v in answers if v not in expected[k]]
    assert not wrong, wrong
    rounds = len(answers) // len(expected)
    for reason in ("unknown_call", "bad_token"):
        assert rig.sample("callctl_ws_rejected_total", {"reason": reason}) >= rounds
    for kind in ("not_websocket", "audio_format", "oversized", "ws_protocol", "audio_rate"):
        assert rig.sample("callctl_protocol_errors_total",
                          {"source": "fork", "kind": kind}) >= 1, kind
    out = capsys.readouterr().out.splitlines()
    for says in ("audio faster than its declared format", "unusable audio format",
                 "message too big"):       # logged with the call they were sent for
        assert any(says in ln and abused.uuid in ln for ln in out), says

    # the abused call lost its fork, not its life: it is up until its caller hangs up
    assert rig.daemon.registry.get(abused.uuid) is not None
    assert abused.hangup_cause is None
    abused.hangup()
    rig.finish(abused, 10)
    assert rig.daemon.server.port and not rig.daemon.server.draining


@pytest.mark.parametrize("text", ['{"mix": []}', '{"mix": {"a": 1}}', '{"mix": ["mono"]}',
                                  '{"sampleRate": [8000]}', '{"sampleRate": 8000.0}'])
def test_metadata_with_a_format_key_of_the_wrong_type_is_our_error(text: str) -> None:
    with pytest.raises((AudioFormatError, MetadataError)):
        parse_metadata(text)


@pytest.mark.parametrize("metadata,code", [
    ('{"sampleRate": null, "mix": null}', 1000),     # absent: the fork goes on, we close
    ('{"sampleRate": 16000, "mix": null}', 1000),
    ('{"sampleRate": null, "mix": "stereo"}', 1000),
    ('{"mix": []}', 1003),
    ('{"sampleRate": "8000"}', 1003),
    ('{"sampleRate": 44100}', 1003),
])
def test_fork_metadata_nulls_and_wrong_types(metadata: str, code: int) -> None:
    from prometheus_client import CollectorRegistry

    from callctl.media.forkserver import ForkServer
    from callctl.metrics import Metrics

    server = ForkServer(Metrics(CollectorRegistry()), port=0, handshake_timeout_s=2)
    server.start()
    try:
        url, inbox = server.register("call-1")
        got = close_after(server.address, url[url.index("/fork/"):], TextMessage(data=metadata),
                          BytesMessage(data=bytes(6400)), CloseConnection(code=1000))
        assert got == code
        seen = []
        while (item := inbox.get(0.2)) is not None:
            seen.append(item)
        closed = [i for i in seen if isinstance(i, ForkClosed)]
        assert len(closed) == 1 and closed[0].code == code
        assert any(isinstance(i, AudioFrame) for i in seen) == (code == 1000)
    finally:
        server.stop()
