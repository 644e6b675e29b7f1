"""Stream-mode pause (``StreamPlayback.pause``/``unpause``) at its edges: a pause while the
pacer waits for the playout marks, a pause while a frame is being written (a blocked socket
write switches greenlets), a pause before the first frame. No mocks needed: the "fork" is a
pair of plain callables recording what was sent."""

from __future__ import annotations

import json
import time

import gevent
import numpy as np

from callctl.playback import StreamPlayback
from callctl.tts.base import AudioChunk


class Fork:
    """The daemon side of a jambonz fork WebSocket that never echoes marks; the write of
    binary frame number ``block_at`` (1-based) blocks for ``block_s`` (socket back-pressure)."""

    def __init__(self, block_at: int = 0, block_s: float = 0.0) -> None:
        self.frames: list[bytes] = []
        self.texts: list[str] = []
        self.block_at = block_at
        self.block_s = block_s

    def send_binary(self, pcm: bytes) -> None:
        self.frames.append(pcm)
        if len(self.frames) == self.block_at:
            gevent.sleep(self.block_s)

    def send_text(self, text: str) -> None:
        self.texts.append(text)

    def marks(self) -> list[str]:
        return [json.loads(t)["data"]["name"] for t in self.texts
                if json.loads(t)["type"] == "mark"]


def numbered(frames: int) -> AudioChunk:
    """``frames`` 20 ms frames at 8 kHz; frame k (1-based) holds the value k."""
    pcm = np.repeat(np.arange(1, frames + 1, dtype=np.int16), 160).astype("<i2").tobytes()
    return AudioChunk(pcm=pcm, rate=8000, text="one")


def values(frames: list[bytes]) -> list[int]:
    return [int(np.frombuffer(f, "<i2")[0]) for f in frames]


def test_pause_while_waiting_for_the_marks_keeps_the_mark_wait_bounded() -> None:
    """Everything was sent and, by the pacing clock, heard; the playout mark has not come
    back (late, or swallowed by the module) when the caller's "mhm" pauses the bot. After
    the unpause nothing is left to send: the reply must still end within the mark grace,
    not stay "playing" for ever (the dialog waits for it)."""
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, lead_ms=200,
                       mark_grace_s=0.2, tail_ms=0)
    h.add(numbered(5))
    h.finish()
    gevent.sleep(0.25)                         # 0.1 s sent at once, heard by now
    assert not h.done and h.pause()
    assert h.unpause()
    assert h.wait(2.0), "the reply never ended after a pause in the mark wait"
    assert not h.interrupted and h.pieces[0].state == "done"


def test_pause_during_a_blocked_frame_write_sends_that_frame_again() -> None:
    """The pacer is inside ``send_binary`` (the write blocked: the conversation greenlet
    runs) when the bot is paused. That frame went out before the killAudio, so the module
    dropped it: on unpause it is sent again, with everything after it, and the pacer lives
    on to send the mark."""
    fork = Fork(block_at=3, block_s=0.1)
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, lead_ms=2000, tail_ms=0)
    h.add(numbered(20))
    h.finish()
    deadline = time.monotonic() + 2
    while len(fork.frames) < 3 and time.monotonic() < deadline:
        gevent.sleep(0.005)
    assert len(fork.frames) == 3               # the pacer is blocked writing frame 3
    assert h.pause()
    sent = len(fork.frames)
    gevent.sleep(0.2)                          # the write returns while paused
    assert h.unpause()
    deadline = time.monotonic() + 2
    while not fork.marks() and time.monotonic() < deadline:
        gevent.sleep(0.02)
    again = values(fork.frames[sent:])
    assert again and again[0] <= 3, values(fork.frames)
    assert again == list(range(again[0], 21))  # frame 3 and on, in order, none lost
    assert fork.marks() == [h.pieces[0].event_uuid] and not h.errors


def test_pause_before_the_first_frame_keeps_the_start_estimate() -> None:
    """A pause before any audio was sent (the caller spoke while the first sentence was
    being synthesized): nothing was heard, so the first playout mark still dates the start
    of the reply (``started``), as without a pause."""
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, lead_ms=200, tail_ms=0)
    assert h.pause()
    h.add(numbered(5))
    h.finish()
    gevent.sleep(0.05)
    assert not fork.frames                     # silent while paused
    assert h.unpause()
    deadline = time.monotonic() + 2
    while not fork.marks() and time.monotonic() < deadline:
        gevent.sleep(0.02)
    h.on_fork_message({"type": "mark", "data": {"name": h.pieces[0].event_uuid,
                                                "event": "playout"}})
    assert h.done and h.started is not None and h.cmd_sent is not None
    assert h.started >= h.cmd_sent
