"""The media half of one emulated channel: a 20 ms media clock, caller audio, file playback,
what the caller hears, and the mod_audio_fork bugs attached to the channel.

How this works: ``start()`` spawns one greenlet that ticks every 20 ms of media time
(``0.020 / speed`` wall seconds, on absolute deadlines so it does not drift). Each tick
takes one frame of caller audio (queued by ``say()``, silence otherwise) and builds the frame
sent to the caller from the current playback plus any bidirectional fork stream (``None``
while nothing plays: FreeSWITCH sends no RTP then). Both frames go to every tap (the forks),
and audio sent to the caller is recorded as ``Heard`` stretches stamped with
``time.monotonic()``.

Timing model (measured on FreeSWITCH 1.10.12, DESIGN.md §8), in media time:
* sendmsg/``play()``: PLAYBACK_START at once, first audio frame 20–40 ms later (~30 ms).
* ``broadcast=True``: 100 ms lead before PLAYBACK_START; a break during the lead is lost.
* ``break_playback()``: audio continues for at most two frames, then PLAYBACK_STOP ``break``.
* ``toggle_pause()`` (``uuid_fileman <uuid> pause``): toggles the current file's pause, as
  ``switch_ivr_process_fh`` does with SWITCH_FILE_PAUSE. While paused the playback loop
  (``switch_ivr_play_file``) keeps writing frames of 0xFF bytes (L16 -1: silence) and does
  not advance the file; a break is checked before the pause, so ``uuid_break`` stops a
  paused file. Each file starts unpaused. The caller's ``Heard`` stretch ends at the pause
  (``paused=True``) and an unpause starts a new stretch of the same source.
* Bidirectional fork stream (jambonz): mixed into the frames sent to the caller once the
  module's pre-buffer fills; an underrun ends the caller's ``"stream"`` stretch and the next
  audio starts a new one. ``killAudio``/``stop_play`` drop the buffer at once; the stretch
  they cut ends ``interrupted``, also when the kill falls in an underrun gap of at most
  ``STREAM_GAP_S`` (``stream_interrupted``). The module cannot tell a pause from a cut: a
  daemon pauses a stream by killAudio and later sends the unheard audio again. So, as the
  caller's ear would, a cut stretch whose audio comes back (the next stretch, within
  ``STREAM_PAUSE_S``, starts with 20 ms of audio found, at any sample offset, in the last
  frames heard before the cut) is recorded as ``paused`` instead of ``interrupted``, like a
  file paused with uuid_fileman.
* The stream plays only into frames the channel writes (the jambonz module's bidirectional
  audio is a WRITE_REPLACE media bug, ``dub_speech_frame``): while a playback runs (paused
  too), or while ``idle_frames`` is on (the park loop writes silence:
  ``send_silence_when_idle``, set by ``Channel.park_loop`` from the channel variable it
  reads once when the media comes up). Otherwise the module's buffer is not drained and no
  mark is echoed: the caller hears nothing, as on the real switch (10 of 10 turns). The
  idle frames themselves are not modelled as audio (``write`` stays None while idle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
import wave
from collections import deque
from pathlib import Path

import gevent
import gevent.event
import gevent.lock
import numpy as np
import numpy.typing as npt
import soxr

from callctl.log import get_logger
from callctl.sim import audiofork, g711
from callctl.sim.interfaces import ChannelSignals, Heard, PlayResult

__all__ = ["Media", "MediaError", "new_media"]

FRAME_S = 0.020
PLAY_LATENCY_S = 0.020      # first frame at the first tick >= this after play(): ~30 ms
BROADCAST_LEAD_S = 0.100    # uuid_broadcast's 5 lead frames
BREAK_TAIL_S = 0.040        # frames still sent after a break: at most two
MAX_CALLER_QUEUE_S = 600.0  # bound on queued caller speech
MAX_PLAY_WAIT_S = 3600.0
STREAM_GAP_S = 0.25         # streamed audio resuming within this after an underrun: same speech
STREAM_PAUSE_S = 5.0        # a killAudio cut whose audio comes back within this was a pause
STREAM_TAIL_FRAMES = 3      # frames of a stream stretch remembered to recognize its continuation

Samples = npt.NDArray[np.int16]


class MediaError(RuntimeError):
    """Misuse of the media half (clock not running, caller queue full, bad audio)."""


class _Source:
    """Frames of one playback at the channel rate."""

    def __init__(self, samples: Samples | None, frame: int, loops: int = 1) -> None:
        self.samples = samples if samples is not None else np.zeros(0, np.int16)
        self.frame = frame
        self.loops = loops          # -1 = forever
        self.pos = 0

    def next_frame(self) -> Samples | None:
        n = len(self.samples)
        if n == 0 or (self.loops >= 0 and self.pos >= n * self.loops):
            return None
        idx = (np.arange(self.pos, self.pos + self.frame) % n)
        end = n * self.loops if self.loops >= 0 else None
        self.pos += self.frame
        out = self.samples[idx]
        if end is not None and self.pos > end:
            out = out.copy()
            out[self.frame - (self.pos - end):] = 0
        return out

    @property
    def duration_samples(self) -> float:
        return float("inf") if self.loops < 0 else len(self.samples) * self.loops


@dataclasses.dataclass
class _Playback:
    path: str
    source: _Source
    start_at: float
    stop_at: float | None = None
    result: PlayResult | None = None
    heard_idx: int | None = None
    paused: bool = False
    paused_idx: int | None = None     # the stretch the last pause ended
    paused_s: float = 0.0             # media seconds spent paused (extends the wait bound)
    done: gevent.event.Event = dataclasses.field(default_factory=gevent.event.Event)


def new_media(signals: ChannelSignals, codec: str = "PCMU", rate: int = 8000,
              speed: float = 1.0, fork_variant: str = "jambonz",
              temp_dir: str | None = None, idle_frames: bool = False) -> Media:
    """The media half for one channel (see ``ChannelMedia``). ``speed`` > 1 runs the media
    clock faster than real time; ``fork_variant`` is ``"jambonz"`` or ``"drachtio"``;
    ``idle_frames``: the channel writes frames while nothing plays (module doc)."""
    media = Media(signals, codec, rate, speed, fork_variant, temp_dir)
    media.write_idle_frames(idle_frames)
    return media


class Media:
    """Implements ``callctl.sim.interfaces.ChannelMedia`` (plus ``say``)."""

    def __init__(self, signals: ChannelSignals, codec: str = "PCMU", rate: int = 8000,
                 speed: float = 1.0, fork_variant: str = "jambonz",
                 temp_dir: str | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if rate % 8000:
            raise ValueError("rate must be a multiple of 8000")
        if fork_variant not in audiofork.VARIANTS:
            raise ValueError(f"fork_variant must be one of {audiofork.VARIANTS}")
        self.signals = signals
        self.codec = codec
        self.rate = rate
        self.speed = speed
        self.fork_variant = fork_variant
        self.temp_dir = temp_dir or os.environ.get("TMPDIR", "/tmp")
        self.frame_samples = rate // 50
        self.frame_s = FRAME_S / speed
        self.log = get_logger(call_uuid=signals.uuid)
        self._silence = np.zeros(self.frame_samples, np.int16)
        self._caller: deque[Samples] = deque()
        self._heard: list[Heard] = []
        self._stream_heard: dict[str, int] = {}   # running stream stretch per fork
        self._stream_last: dict[str, int] = {}    # last stream stretch per fork (may have ended)
        self._stream_cut: dict[str, int] = {}     # ... if killAudio cut it
        self._stream_tail: dict[str, deque[Samples]] = {}   # its last frames
        self._taps: list[audiofork.Tap] = []
        self.forks = audiofork.ForkTable(self)
        self._current: _Playback | None = None
        self._play_lock = gevent.lock.Semaphore()
        self._flush_gen = 0
        self._clock: gevent.Greenlet | None = None
        self._t0 = 0.0
        self._tick_no = 0
        self._running = False
        self._stopped = False
        self.idle_frames = False      # the channel writes frames while nothing plays

    def write_idle_frames(self, on: bool) -> None:
        """Whether the channel writes frames while nothing plays (``send_silence_when_idle``
        as the park loop read it). Streamed audio is heard only into written frames."""
        self.idle_frames = on

    # -- clock -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the media clock (idempotent; no-op after ``stop()``)."""
        if self._running or self._stopped:
            return
        self._running = True
        self._t0 = time.monotonic()
        self._tick_no = 0
        self._clock = gevent.spawn(self._run)

    @property
    def running(self) -> bool:
        """True while the media clock ticks."""
        return self._running

    def _next_tick_time(self) -> float:
        return self._t0 + (self._tick_no + 1) * self.frame_s

    def _run(self) -> None:
        try:
            while self._running:
                delay = self._next_tick_time() - time.monotonic()
                if delay > 0:
                    gevent.sleep(delay)
                elif delay < -0.25:          # starved for a long time: resync, don't burst
                    self.log.warning("sim.media_clock_lag", lag_s=-delay)
                    self._t0 = time.monotonic() - self._tick_no * self.frame_s
                if not self._running:
                    break
                self._tick_no += 1
                self._tick(time.monotonic())
        except Exception:
            self.log.exception("sim.media_clock_failed")
            self._running = False

    def _tick(self, t: float) -> None:
        read = self._caller.popleft() if self._caller else self._silence
        write = self._write_frame(t)
        for tap in list(self._taps):
            try:
                tap.on_frame(read, write, t)
            except Exception:
                self.log.exception("sim.media_tap_failed")

    def _write_frame(self, t: float) -> Samples | None:
        mix: npt.NDArray[np.int32] | None = None
        pb = self._current
        writing = self.idle_frames or (pb is not None and pb.result is None)
        if pb is not None and pb.result is None:
            if pb.stop_at is not None and t >= pb.stop_at:
                self._finish(pb, "break")
            elif pb.paused:
                pb.paused_s += FRAME_S
                mix = np.full(self.frame_samples, -1, np.int32)   # memset(abuf, 255, …)
            elif t >= pb.start_at:
                frame = pb.source.next_frame()
                if frame is None:
                    self._finish(pb, "done")
                else:
                    mix = frame.astype(np.int32)
                    source = "tone" if pb.path.startswith("tone_stream://") else pb.path
                    pb.heard_idx = self._mark_heard(pb.heard_idx, source, t)
        if not writing:                   # no frame for the module's media bug to replace
            self._stream_heard.clear()
            return None
        for name, frame in self.forks.stream_frames(self.frame_samples):
            key = f"stream:{name}"
            if frame is None:
                self._stream_heard.pop(key, None)
                continue
            mix = frame.astype(np.int32) if mix is None else mix + frame
            running = self._stream_heard.get(key)
            if running is None:
                self._stream_began(key, frame, t)
            idx = self._mark_heard(running, "stream", t)
            self._stream_heard[key] = self._stream_last[key] = idx
            self._stream_tail[key].append(frame.copy())
        if mix is None:
            return None
        return np.clip(mix, -32768, 32767).astype(np.int16)

    def _stream_began(self, key: str, frame: Samples, t: float) -> None:
        """A new stream stretch: if killAudio cut the previous one at most
        ``STREAM_PAUSE_S`` ago and this one starts with audio the caller heard at the cut
        (found anywhere in its last ``STREAM_TAIL_FRAMES`` frames, not silence: the daemon
        frames each piece on its own, so what it re-sends need not start on one of our frame
        boundaries), the bot went on where it stopped (a daemon's pause re-sends from
        there): that stretch ended paused."""
        cut = self._stream_cut.pop(key, None)
        tail = self._stream_tail.get(key, ())
        if cut is not None and t - self._heard[cut].end <= STREAM_PAUSE_S / self.speed \
                and _heard_within(frame, list(tail)):
            self._heard[cut] = dataclasses.replace(self._heard[cut], interrupted=False,
                                                   paused=True)
        self._stream_tail[key] = deque(maxlen=STREAM_TAIL_FRAMES)

    def _mark_heard(self, idx: int | None, source: str, t: float) -> int:
        if idx is None:
            self._heard.append(Heard(start=t, end=t, source=source, interrupted=False))
            return len(self._heard) - 1
        self._heard[idx] = dataclasses.replace(self._heard[idx], end=t)
        return idx

    def _finish(self, pb: _Playback, result: PlayResult) -> None:
        if pb.result is not None:
            return
        pb.result = result
        idx = pb.heard_idx if pb.heard_idx is not None else (
            pb.paused_idx if pb.paused else None)
        if result == "break" and idx is not None:
            self._heard[idx] = dataclasses.replace(self._heard[idx], interrupted=True)
        pb.done.set()

    def stop(self) -> None:
        """Hang-up: stop the clock, end the playback (``break``), close every fork with
        Close 1000 and delete its temp files. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        if self._current is not None:
            self._finish(self._current, "break")
        self.forks.hangup()
        if self._clock is not None and self._clock is not gevent.getcurrent():
            self._clock.kill(block=False)

    # -- caller audio -------------------------------------------------------------------
    def say(self, samples_8k: npt.ArrayLike) -> tuple[float, float]:
        """Queue caller speech (int16, 8000 Hz mono) after anything already queued; it goes
        through the channel's G.711 codec like RTP would. Returns the monotonic times at
        which its first frame will be sent and its last sample ends. Raises MediaError if
        the clock is not running or more than 10 minutes of speech are queued."""
        if not self._running:
            raise MediaError("media clock not running (call not answered or already hung up)")
        x = np.asarray(samples_8k)
        if x.dtype != np.int16 or x.ndim != 1:
            raise MediaError("say() takes a 1-D int16 array at 8000 Hz")
        if self.codec in ("PCMU", "PCMA"):
            x = g711.phone_line(x, self.codec)
        if self.rate != 8000:
            x = soxr.resample(x, 8000, self.rate)
        n = len(x)
        frames = -(-n // self.frame_samples)
        if (len(self._caller) + frames) * FRAME_S > MAX_CALLER_QUEUE_S:
            raise MediaError("caller speech queue is full")
        start = self._next_tick_time() + len(self._caller) * self.frame_s
        padded = np.zeros(frames * self.frame_samples, np.int16)
        padded[:n] = x
        self._caller.extend(padded.reshape(frames, self.frame_samples))
        return start, start + n / self.rate / self.speed

    def caller_queued_s(self) -> float:
        """Media seconds of caller speech not sent yet."""
        return len(self._caller) * FRAME_S

    # -- playback -----------------------------------------------------------------------
    def play(self, path: str, broadcast: bool = False) -> PlayResult:
        """See ``ChannelMedia.play``. WAV (16-bit, any rate), raw ``.r8``/``.r16`` L16 and
        ``tone_stream://%(on,off,freq[,freq]);loops=N`` are played; a missing file is
        ``"notfound"``, an unreadable or unsupported one ``"error"`` (neither fires events)."""
        gen = self._flush_gen
        if not self._play_lock.acquire(timeout=MAX_PLAY_WAIT_S):
            return "error"
        try:
            if gen != self._flush_gen:
                return "break"                 # flushed by uuid_break all while queued
            if not self._running:
                return "error"
            try:
                source = self._load(path)
            except FileNotFoundError:
                return "notfound"
            except (OSError, ValueError, wave.Error) as exc:
                self.log.warning("sim.playback_unreadable", path=path, error=str(exc))
                return "error"
            if broadcast:
                gevent.sleep(BROADCAST_LEAD_S / self.speed)   # a break now is lost
                if not self._running:
                    return "break"
            pb = _Playback(path, source, start_at=time.monotonic() + PLAY_LATENCY_S / self.speed)
            self.signals.fire_event("PLAYBACK_START", {"Playback-File-Path": path})
            self._current = pb
            limit = source.duration_samples / self.rate / self.speed + 5.0
            began = time.monotonic()
            while not pb.done.wait(timeout=min(limit, MAX_PLAY_WAIT_S)):
                # a paused file waits as long as it is paused (bounded by MAX_PLAY_WAIT_S)
                waited = time.monotonic() - began
                over = waited >= limit + pb.paused_s / self.speed and not pb.paused
                if over or waited >= MAX_PLAY_WAIT_S:
                    self._finish(pb, "break")
                    break
            self._current = None
            result = pb.result or "break"
            self.signals.fire_event("PLAYBACK_STOP", {"Playback-File-Path": path,
                                                      "Playback-Status": result})
            return result
        finally:
            self._play_lock.release()

    def break_playback(self, all_: bool = False) -> None:
        """uuid_break: the current playback stops within two frames. ``all_`` also discards
        plays queued behind it. A playback still in its broadcast lead is not affected."""
        if all_:
            self._flush_gen += 1
        self.kill_audio()

    def has_file_handle(self) -> bool:
        """A file is open for playback (FreeSWITCH's ``__fh`` channel private is set)."""
        return self._current is not None and self._current.result is None

    def toggle_pause(self) -> bool:
        """uuid_fileman pause: toggle the current file's pause (see the module docstring).
        False when no file is open (``-ERR No File Handle!``)."""
        pb = self._current
        if pb is None or pb.result is not None:
            return False
        pb.paused = not pb.paused
        if pb.paused:
            if pb.heard_idx is not None:
                self._heard[pb.heard_idx] = dataclasses.replace(
                    self._heard[pb.heard_idx], paused=True)
            pb.paused_idx, pb.heard_idx = pb.heard_idx, None
        return True

    def kill_audio(self) -> None:
        """Stop the current playback (mod_audio_fork killAudio: CF_BREAK, no flush)."""
        pb = self._current
        if pb is not None and pb.result is None and pb.stop_at is None:
            pb.stop_at = time.monotonic() + BREAK_TAIL_S / self.speed

    def is_playing(self) -> bool:
        """True while a file plays (after its lead)."""
        return self._current is not None and self._current.result is None

    def _load(self, path: str) -> _Source:
        if path.startswith("tone_stream://"):
            return self._tone(path[len("tone_stream://"):])
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(path)
        ext = p.suffix.lower()
        if ext == ".wav":
            with wave.open(str(p), "rb") as w:
                if w.getsampwidth() != 2:
                    raise ValueError("only 16-bit PCM WAV is supported")
                ch, rate = w.getnchannels(), w.getframerate()
                data = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)
            if ch > 1:
                data = data[: len(data) // ch * ch].reshape(-1, ch)[:, 0].copy()
        elif ext in (".r8", ".r16"):
            rate = 8000 if ext == ".r8" else 16000
            raw = p.read_bytes()
            data = np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.int16)
        else:
            raise ValueError(f"unsupported file format {ext!r}")
        if rate != self.rate and len(data):
            data = soxr.resample(data, rate, self.rate)
        return _Source(data, self.frame_samples)

    def _tone(self, spec: str) -> _Source:
        m = re.fullmatch(r"%\(([\d,\s]+)\)(?:;loops=(-?\d+))?", spec.strip())
        if not m:
            raise ValueError(f"unsupported tone_stream {spec!r}")
        nums = [int(v) for v in m.group(1).split(",")]
        if len(nums) < 3:
            raise ValueError("tone_stream needs %(on_ms,off_ms,freq[,freq...])")
        on_ms, off_ms, freqs = nums[0], nums[1], nums[2:]
        t = np.arange(int(self.rate * on_ms / 1000)) / self.rate
        tone = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
        cycle = np.concatenate([np.asarray(tone) * 8000, np.zeros(int(self.rate * off_ms / 1000))])
        loops = int(m.group(2)) if m.group(2) else 1
        return _Source(cycle.astype(np.int16), self.frame_samples, loops=loops)

    # -- what the caller heard, forks ---------------------------------------------------
    def heard(self) -> list[Heard]:
        """Everything the caller heard so far, in order of start."""
        return list(self._heard)

    def add_tap(self, tap: audiofork.Tap) -> None:
        """Receive every frame (caller and sent-to-caller) from the next tick on."""
        self._taps.append(tap)

    def remove_tap(self, tap: audiofork.Tap) -> None:
        """Stop receiving frames (no error if not attached)."""
        with contextlib.suppress(ValueError):
            self._taps.remove(tap)

    def stream_interrupted(self, bug: str) -> None:
        """A fork's streamed audio was cleared (killAudio/stop_play): its Heard stretch ends
        interrupted if it is running, or if it stopped at most ``STREAM_GAP_S`` (media time)
        ago. The module pre-buffers 640 samples again after an underrun, so a reply paced
        close to real time reaches the caller as stretches a few frames apart; a kill in
        such a gap cuts that reply (the audio that would have followed is discarded), so the
        stretch it cut is the last one heard. A stretch that ended longer ago ended by
        itself and is left alone."""
        key = f"stream:{bug}"
        running = self._stream_heard.pop(key, None)
        idx = self._stream_last.pop(key, None)
        if idx is None:
            return
        h = self._heard[idx]
        if running is not None or time.monotonic() - h.end <= STREAM_GAP_S / self.speed:
            self._heard[idx] = dataclasses.replace(h, interrupted=True)
            self._stream_cut[key] = idx

    def fork_api(self, argv: list[str]) -> str:
        """``uuid_audio_fork <uuid> …`` with the tokens after the uuid (see audiofork)."""
        return audiofork.run_command(self.forks, [self.signals.uuid, *argv])


def _heard_within(frame: Samples, tail: list[Samples]) -> bool:
    """``frame`` is (non-silent) audio found in ``tail`` (consecutive frames) at some sample
    offset, allowing for a resampler's different state."""
    if not tail or not len(frame):
        return False
    heard = np.concatenate(tail).astype(np.int32)
    if len(heard) < len(frame):
        return False
    x = frame.astype(np.int32)
    if int(np.max(np.abs(x))) < 64:                 # silence: proves nothing
        return False
    windows = np.lib.stride_tricks.sliding_window_view(heard, len(x))
    peaks = np.max(np.abs(windows), axis=1)
    diffs = np.max(np.abs(windows - x), axis=1)
    return bool(np.any((peaks >= 64) & (diffs <= np.maximum(32, peaks // 10))))
