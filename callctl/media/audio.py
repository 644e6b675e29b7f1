"""Per-call audio path: fork events, the bounded inbox, and L16 decoding helpers.

How this works: the fork WebSocket server turns what mod_audio_fork sends into small frozen
events (``ForkConnected``, ``AudioFrame``, ``ForkText``, ``ForkDrained``, ``ForkClosed``) and
puts them in the call's ``Inbox``, in stream order: a ``ForkClosed`` comes after the audio
that preceded it, so the last words of a turn are heard before the fork's end is. Audio frames
are bounded by ``max_frames``; overflow drops the oldest *frame* (never a control event) and
counts ``audio_frames_dropped``. Control events are never dropped and bounded by
``max_control`` (past it ``InboxFull``: the consumer is stuck). ``put_*`` never blocks, so
the hub (the socket greenlet) is never held up by a slow consumer.

``PcmDecoder`` turns raw L16 little-endian bytes (mono or interleaved stereo, any message
size, odd byte counts carried over to the next message) into mono int16 samples at the
pipeline rate, taking the caller (left) channel of stereo and resampling with soxr when the
fork's rate differs. ``RateMonitor`` notices a fork whose byte rate does not match the rate it
was asked for. Nothing here does I/O.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent.event
import numpy as np
import numpy.typing as npt
import soxr

from callctl.metrics import Metrics

Samples = npt.NDArray[np.int16]

#: Rates mod_audio_fork can be asked for (``8k``, ``16k`` or N×8000, PROTOCOL.md §5.2).
FORK_RATES = (8000, 16000, 24000, 32000, 48000, 64000)
MIX_CHANNELS = {"mono": 1, "mixed": 1, "stereo": 2}


class AudioFormatError(ValueError):
    """The peer declared or sent audio we cannot take (rate, channels). Close code 1003."""

    close_code = 1003


# ---------------------------------------------------------------------------------------------
# Events put in a call's inbox.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForkConnected:
    """A fork WebSocket for the call was accepted (again, if ``reconnect``)."""

    call_uuid: str
    metadata: Mapping[str, Any] | None
    raw_metadata: str | None
    reconnect: bool
    at: float


@dataclass(frozen=True)
class AudioFrame:
    """Caller audio: mono int16 at ``rate``; ``at`` is when the bytes arrived (monotonic)."""

    samples: Samples = field(repr=False, compare=False)
    rate: int
    at: float

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate


@dataclass(frozen=True)
class ForkText:
    """A text frame after the metadata (mod_audio_fork ``send_text``)."""

    text: str
    at: float


@dataclass(frozen=True)
class ForkDrained:
    """graceful-shutdown's empty binary frame: no more audio will come on this fork."""

    at: float


@dataclass(frozen=True)
class ForkClosed:
    """The fork's WebSocket ended (close frame, EOF, error, replaced by a reconnect)."""

    code: int
    reason: str
    at: float


@dataclass(frozen=True)
class FirstAudio:
    """Emitted by the Listener: the first audio frame after a fork (re)connected arrived at
    ``at`` (the call timeline's "first frame")."""

    at: float


@dataclass(frozen=True)
class AudioRateSuspect:
    """The fork's byte rate does not match the format it was asked for (once per fork)."""

    expected_bytes_per_s: float
    observed_bytes_per_s: float
    at: float


ControlEvent = ForkConnected | ForkText | ForkDrained | ForkClosed | AudioRateSuspect
InboxItem = ControlEvent | AudioFrame


class InboxFull(RuntimeError):
    """The control lane is full: the consumer is gone or stuck (a bug, not a peer fault)."""


class Inbox:
    """Bounded, stream-ordered inbox for one call. Producers never block; one consumer."""

    def __init__(self, max_frames: int, metrics: Metrics, max_control: int = 64) -> None:
        if max_frames < 1 or max_control < 1:
            raise ValueError("inbox bounds must be >= 1")
        self._items: collections.deque[InboxItem] = collections.deque()
        self._frames = 0
        self._max_frames = max_frames
        self._max_control = max_control
        self._metrics = metrics
        self._ready = gevent.event.Event()
        self.dropped = 0

    def put_audio(self, frame: AudioFrame) -> None:
        """Queue a frame; when ``max_frames`` are queued, drop the oldest frame (counted)."""
        if self._frames >= self._max_frames:
            for i, item in enumerate(self._items):
                if isinstance(item, AudioFrame):
                    del self._items[i]
                    break
            self._frames -= 1
            self.dropped += 1
            self._metrics.audio_frames_dropped.inc()
        self._items.append(frame)
        self._frames += 1
        self._ready.set()

    def put_control(self, event: ControlEvent) -> None:
        """Queue a control event after the audio before it (never dropped); raises
        ``InboxFull`` when ``max_control`` control events are already waiting."""
        if len(self._items) - self._frames >= self._max_control:
            raise InboxFull(f"control events full ({self._max_control}); consumer stuck?")
        self._items.append(event)
        self._ready.set()

    def get(self, timeout: float) -> InboxItem | None:
        """The next item in stream order; ``None`` after ``timeout`` seconds with nothing."""
        if not self._items:
            self._ready.clear()
            self._ready.wait(timeout)
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, AudioFrame):
            self._frames -= 1
        return item

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------------------------------
# Decoding L16 from the fork.
# ---------------------------------------------------------------------------------------------


class MetadataError(ValueError):
    """The metadata text frame is not the JSON object callctl sent (peer garbage)."""


def parse_metadata(text: str) -> dict[str, Any]:
    """Parse the fork's first text frame: a JSON object, optionally naming the audio format.

    Recognised keys (all optional): ``sampleRate`` (int in ``FORK_RATES``), ``mix``
    (``mono``/``mixed``/``stereo``). Returns the whole object. Raises ``MetadataError`` for
    non-JSON or non-object JSON, ``AudioFormatError`` for a format key we cannot take.
    """
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise MetadataError(f"metadata is not JSON: {text[:80]!r}") from e
    if not isinstance(obj, dict):
        raise MetadataError(f"metadata is not a JSON object: {text[:80]!r}")
    rate = obj.get("sampleRate")
    if rate is not None and (type(rate) is not int or rate not in FORK_RATES):
        raise AudioFormatError(f"metadata sampleRate {rate!r} not one of {FORK_RATES}")
    mix = obj.get("mix")
    if mix is not None and (not isinstance(mix, str) or mix not in MIX_CHANNELS):
        raise AudioFormatError(f"metadata mix {mix!r} not one of {sorted(MIX_CHANNELS)}")
    return obj


class PcmDecoder:
    """L16 LE bytes (any chunking) → mono int16 at ``out_rate``. Not thread-safe."""

    def __init__(self, in_rate: int, channels: int, out_rate: int) -> None:
        if in_rate not in FORK_RATES:
            raise AudioFormatError(f"fork rate {in_rate} not one of {FORK_RATES}")
        if channels not in (1, 2):
            raise AudioFormatError(f"fork channels {channels} not 1 or 2")
        self.in_rate = in_rate
        self.channels = channels
        self.out_rate = out_rate
        self._carry = b""
        self._resampler = (
            soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
            if in_rate != out_rate else None
        )

    @property
    def bytes_per_second(self) -> int:
        return self.in_rate * 2 * self.channels

    def decode(self, data: bytes) -> Samples:
        """Mono samples for ``data`` plus any carried bytes; a partial sample is kept."""
        buf = self._carry + data if self._carry else data
        step = 2 * self.channels
        usable = len(buf) - len(buf) % step
        self._carry = bytes(buf[usable:])
        pcm = np.frombuffer(buf[:usable], dtype="<i2").astype(np.int16)
        if self.channels == 2:
            pcm = np.ascontiguousarray(pcm[0::2])  # left = caller (read stream)
        if self._resampler is not None:
            pcm = self._resampler.resample_chunk(pcm)
        return pcm


class RateMonitor:
    """Compare a fork's byte rate with the expected one, after ``min_span_s`` of wall time.

    ``feed(n, now)`` returns ``(expected, observed)`` once, the first time the observed rate
    is above ``tolerance`` × expected (e.g. 16 kHz audio on an 8 kHz fork); else ``None``.
    A slow rate is not flagged: ``pause`` legitimately stops audio.
    """

    def __init__(self, bytes_per_s: float, tolerance: float = 1.5, min_span_s: float = 2.0):
        self.expected = bytes_per_s
        self.tolerance = tolerance
        self.min_span_s = min_span_s
        self._first: float | None = None
        self._bytes = 0
        self._fired = False

    def feed(self, nbytes: int, now: float | None = None) -> tuple[float, float] | None:
        now = time.monotonic() if now is None else now
        if self._first is None:
            self._first = now
            return None  # the first message's bytes were accumulated before it arrived
        self._bytes += nbytes
        span = now - self._first
        if self._fired or span < self.min_span_s:
            return None
        observed = self._bytes / span
        ratio = observed / self.expected
        if ratio > self.tolerance:
            self._fired = True
            return self.expected, observed
        return None
