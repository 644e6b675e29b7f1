"""Playing a reply into the call: one ``PlaybackHandle`` per reply, two ways to play it.

How this works:

* ``FilePlayback`` (default; stock FreeSWITCH): each piece of the reply is written as a WAV in
  ``playback.dir`` and played with the transport's ``play(path, event_uuid)`` (``sendmsg
  execute playback`` with ``event-lock`` and ``event-uuid`` on the call's socket). Pieces are
  sent as soon as they are ready; FreeSWITCH queues them (event-lock) and plays them one after
  another. The CallSession forwards the call's ESL events to ``on_event``: a piece has started
  on ``CHANNEL_EXECUTE`` with its Application-UUID or on ``PLAYBACK_START`` with its
  Playback-File-Path, and is over on ``CHANNEL_EXECUTE_COMPLETE`` with its Application-UUID
  (``Application-Response: FILE NOT FOUND`` is counted as an error). ``interrupt()`` sends
  ``stop_playback()`` (``uuid_break <uuid> all``, which also flushes the queued pieces).
  Files are deleted when their piece completes, on interrupt, and on ``close()`` (hangup).
* ``StreamPlayback`` (jambonz mod_audio_fork bidirectional streaming): pieces are cut into
  20 ms L16 frames and sent as binary WebSocket messages by a pacing greenlet that keeps at
  most ``lead_ms`` ahead of real time (the module pre-buffers 80-160 ms before it plays, and
  again after an underrun, so the lead must exceed that; a killAudio drops whatever is
  buffered, so the lead costs nothing at barge-in); the reply ends with ``tail_ms`` of
  silence so its last piece is never stuck under the pre-buffer threshold; after each piece
  a ``mark`` text message is sent, and
  the module's ``{"type": "mark", "data": {"name": …, "event": "playout"}}`` (forwarded to
  ``on_fork_message``) says that piece has played. ``interrupt()`` sends ``killAudio`` then
  ``clearMarks``. ``cmd_sent`` is the first frame sent; ``started`` (when the caller began
  to hear it) is the first ``playout`` mark's time minus the audio played up to that mark,
  or, when no mark came back (interrupted first, or a module that does not echo marks),
  the first frame plus the module's pre-buffer (``min(lead_ms, 1280 samples)``).

Pausing (pause-then-decide barge-in, ``callctl.bargein``): ``pause()`` / ``unpause()``.
``FilePlayback`` pauses at the switch with ``uuid_fileman <uuid> pause``, which TOGGLES the
pause flag of the file handle playing at that instant (FreeSWITCH keeps writing silence and
the file's position; a new file starts unpaused; ``uuid_break`` still stops a paused file).
So the handle keeps the state itself and never toggles twice: ``paused`` is what we want,
``switch_paused`` whether a file at the switch is paused by us. A pause that found no file
(between pieces: ``-ERR No File Handle!``) is sent again when the next piece starts; a piece
that completes while we hold a pause cannot be the paused one (a paused file does not end),
so the pause landed on the next file and stays. ``StreamPlayback`` pauses on our side of
the WebSocket: the pacer stops sending, ``killAudio`` drops what the module has buffered (it
reports the marks in it as ``cleared``), and every frame and mark sent but not yet played
out, as far as the pacing clock says (sent at lead ``t``: heard from ``t``), goes back to
the front of the queue; ``unpause()`` starts pacing again from there, so the caller hears
the reply go on from where it stopped (give or take one 20 ms frame, and the module's
pre-buffer after an underrun). A frame or mark being written when the pause comes (a blocked
write) goes back too. Known limits of a real jambonz module: killAudio clears its playout
buffer but not its pre-buffer (< 640 samples), which plays first on unpause (up to ~60 ms of
the audio just ahead, heard early); and after any killAudio (a pause, or a cut in an
earlier reply on the same fork) it hands the names of the marks it dropped to the next
markers that play, silently, so later names are reported a marker late and the last ones
not at all (the emulator does the same). A reply whose marks do not all come back ends by
the mark-wait bound: ``mark_grace_s`` (0.3 s) after the pacing clock says its audio has
played, which therefore always applies once everything is sent (``marks_missing``, logged as
``playback_marks_missing`` and counted in ``callctl_playback_marks_missing_total``). Late names
only ever mark pieces done late, never early. ``can_pause`` says whether a handle can pause.

Precondition (measured on FreeSWITCH 1.10.12): the module plays the stream, and echoes its
marks, only into frames the channel writes (its bidirectional audio is a WRITE_REPLACE media
bug). A channel parked by the socket app writes none while nothing plays unless
``send_silence_when_idle`` was set when its media came up: without it the caller heard
nothing in 10 of 10 turns and no mark came back. ``callctl.call.session`` sets it before
answering; a call where that was too late, or whose marks never come back at all, is moved
to file playback by the conversation (``callctl_playback_fallbacks_total``).

State: a handle is *playing* until it is done (every piece played after ``finish()``),
interrupted, or closed; after that every method is a harmless no-op. Nothing here decides
*whether* to interrupt (that is ``callctl.bargein``). Timestamps are ``time.monotonic()``:
``cmd_sent`` (first play command / first frame), ``started`` (switch started playing),
``stopped`` (done, interrupted or closed).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import gevent
import gevent.event
import numpy as np

from callctl.call.timeline import Turn
from callctl.log import get_logger
from callctl.metrics import Metrics
from callctl.tts.base import AudioChunk, resample, write_wav_atomic

DIR_MODE = 0o750   # the daemon's group (FreeSWITCH's user should be in it) may read
FILE_MODE = 0o640


class PlaybackError(Exception):
    """Playback could not be started (file not writable, transport gone)."""


class PlaybackTransport(Protocol):
    """What file-mode playback needs from the call's ESL connection (implemented by
    ``callctl.call.control``)."""

    def play(self, path: str, event_uuid: str) -> None:
        """``sendmsg`` execute ``playback <path>`` with ``event-lock: true`` and
        ``event-uuid: <event_uuid>``; returns after ``+OK``; raises on failure."""

    def stop_playback(self) -> None:
        """``api uuid_break <uuid> all``: stop the current file and drop queued ones."""

    def toggle_pause(self) -> bool:
        """``api uuid_fileman <uuid> pause``: toggle the pause of the file playing now. True
        on ``+OK``; False on ``-ERR No File Handle!`` (no file is playing at this instant);
        raises on any other failure."""


@dataclass
class _Piece:
    index: int
    event_uuid: str
    text: str
    duration_s: float
    path: Path | None = None
    state: str = "queued"        # queued | playing | done | notfound


def ensure_dir(path: str | Path) -> Path:
    """Create the playback directory (mode 0750) if needed; ``PlaybackError`` if it is not a
    writable directory."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    except OSError as exc:
        raise PlaybackError(f"cannot create playback.dir {p}: {exc}") from exc
    if not os.access(p, os.W_OK | os.X_OK):
        raise PlaybackError(f"playback.dir {p} is not writable by this process")
    return p


class PlaybackHandle:
    """One reply being played. Use ``FilePlayback`` or ``StreamPlayback``."""

    mode = "base"

    def __init__(self, turn: Turn | None = None, metrics: Metrics | None = None,
                 interruptible: bool = True, call_uuid: str = "") -> None:
        self.turn = turn
        self.metrics = metrics
        self.interruptible = interruptible
        self.call_uuid = call_uuid
        self.log = get_logger(call_uuid=call_uuid) if call_uuid else get_logger()
        self.pieces: list[_Piece] = []
        self.cmd_sent: float | None = None
        self.started: float | None = None
        self.stopped: float | None = None
        self.interrupted = False
        self.closed = False
        self.finished = False      # no more pieces will be added
        self.errors: list[str] = []
        self.cut_index: int | None = None
        self.paused = False            # pause() was called and unpause() not yet
        self.paused_at: float | None = None   # monotonic time of the pause now held
        self.pauses = 0                # how many pauses this handle had
        self._done = gevent.event.Event()
        self._on_stop: list[Callable[[], None]] = []

    # -- state ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the handle played everything, was interrupted, or closed."""
        return self._done.is_set()

    @property
    def cut_text(self) -> str:
        """The piece that was playing (or next) when interrupted: what to repeat."""
        if self.cut_index is None or self.cut_index >= len(self.pieces):
            return ""
        return self.pieces[self.cut_index].text

    def remaining_text(self) -> str:
        """Text of the cut piece and everything after it (for resume-or-repeat)."""
        if self.cut_index is None:
            return ""
        return " ".join(p.text for p in self.pieces[self.cut_index:] if p.text)

    def wait(self, timeout: float | None) -> bool:
        """Block this greenlet until done or ``timeout`` seconds; True if done."""
        return bool(self._done.wait(timeout))

    def add_stop_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once when the handle is interrupted or closed (e.g. cancel synthesis).
        Not called when the reply simply played to its end."""
        if self.interrupted or self.closed:
            fn()
        else:
            self._on_stop.append(fn)

    def _stamp(self, mark: str, at: float) -> None:
        if self.turn is not None:
            self.turn.mark(mark, at)

    def _mark_started(self, at: float) -> None:
        if self.started is not None:
            return
        self.started = at
        self._stamp("playback_started", at)
        if self.metrics is not None and self.cmd_sent is not None:
            self.metrics.observe_hop("play_out", at - self.cmd_sent)

    def _mark_cmd_sent(self, at: float) -> None:
        if self.cmd_sent is not None:
            return
        self.cmd_sent = at
        self._stamp("playback_cmd", at)
        if self.turn is not None and self.metrics is not None:
            first = self.turn.marks.get("tts_first_chunk")
            if first is not None:
                self.metrics.observe_hop("playback_start", at - first)

    def _set_done(self) -> None:
        if not self._done.is_set():
            self.stopped = time.monotonic()
            self._done.set()

    def _maybe_done(self) -> None:
        if self.finished and all(p.state in ("done", "notfound") for p in self.pieces):
            self._set_done()

    def _fire_stop(self) -> None:
        callbacks, self._on_stop = self._on_stop, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                self.log.exception("playback_stop_callback_failed")

    def _new_piece(self, chunk: AudioChunk) -> _Piece:
        piece = _Piece(index=len(self.pieces), event_uuid=str(uuid.uuid4()), text=chunk.text,
                       duration_s=chunk.duration_s)
        self.pieces.append(piece)
        return piece

    # -- public API -------------------------------------------------------------------------

    def add(self, chunk: AudioChunk) -> None:
        """Queue one piece of the reply (plays after the ones before it). A no-op once the
        handle is interrupted or closed; ``PlaybackError`` if it cannot be queued."""
        raise NotImplementedError

    def on_event(self, name: str, headers: Mapping[str, str]) -> None:
        """Feed one ESL event of the call (file mode uses them; stream mode ignores them)."""

    def on_fork_message(self, message: Mapping[str, Any]) -> None:
        """Feed one parsed JSON text frame from the fork (stream mode uses marks)."""

    def finish(self) -> None:
        """No more pieces: the handle is done when the queued ones have played."""
        self.finished = True
        self._maybe_done()

    can_pause = False

    def pause(self) -> bool:
        """Pause the audio where it is (barge-in suspected). True if this paused it; False if
        already paused, done, or the mode cannot pause. ``PlaybackError`` if the switch
        refused."""
        if self.done or self.paused or not self.can_pause:
            return False
        self.paused = True
        self.pauses += 1
        self.paused_at = time.monotonic()
        self._pause_at_switch()
        return True

    def unpause(self) -> bool:
        """Let the paused audio continue exactly where it stopped. True if it was paused.
        Harmless when done (the pause ended with the handle). ``PlaybackError`` if the switch
        refused."""
        if not self.paused:
            return False
        self.paused = False
        self.paused_at = None
        if self.done:
            return False
        self._unpause_at_switch()
        return True

    def interrupt(self) -> bool:
        """Stop playing now (barge-in). Returns True if something was cut, False when the
        reply had already played out (or the handle was closed). Idempotent."""
        if self.done:
            return False
        self.interrupted = True
        self.paused = False              # uuid_break stops a paused file too
        now = time.monotonic()
        self.cut_index = next(
            (p.index for p in self.pieces if p.state not in ("done", "notfound")),
            len(self.pieces))
        self._stamp("playback_interrupted", now)
        self._set_done()
        try:
            self._stop_at_switch()          # first: the caller must stop hearing the bot now
        finally:
            self._fire_stop()               # then cancel synthesis (may wait for the feeder)
            self._release()
        return True

    def close(self) -> None:
        """The call is gone (hangup): stop local work, delete files, send nothing."""
        if self.closed:
            return
        self.closed = True
        self._set_done()
        self._fire_stop()
        self._release()

    # -- mode hooks -------------------------------------------------------------------------

    def _stop_at_switch(self) -> None:
        raise NotImplementedError

    def _pause_at_switch(self) -> None:
        raise NotImplementedError

    def _unpause_at_switch(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Free what the mode holds (files, greenlets)."""


class FilePlayback(PlaybackHandle):
    """Plays pieces as WAV files with ``transport.play`` (see the module docstring)."""

    mode = "file"
    can_pause = True

    def __init__(self, transport: PlaybackTransport, directory: str | Path,
                 turn: Turn | None = None, metrics: Metrics | None = None,
                 interruptible: bool = True, call_uuid: str = "") -> None:
        super().__init__(turn, metrics, interruptible, call_uuid)
        self.transport = transport
        self.dir = ensure_dir(directory)
        self._by_uuid: dict[str, _Piece] = {}
        self.switch_paused = False     # a file at the switch is paused by our toggle

    def add(self, chunk: AudioChunk) -> None:
        if self.done:
            return
        piece = self._new_piece(chunk)
        self._by_uuid[piece.event_uuid] = piece
        name = f"{self.call_uuid or 'call'}-{piece.event_uuid}.wav"
        path = self.dir / name
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)  # swept away? recreate
            write_wav_atomic(path, chunk.pcm, chunk.rate, mode=FILE_MODE, durable=False)
        except OSError as exc:
            piece.state = "done"
            self.errors.append(f"write {path}: {exc}")
            raise PlaybackError(f"cannot write {path}: {exc}") from exc
        piece.path = path
        sent_at = time.monotonic()
        try:
            self.transport.play(str(path), piece.event_uuid)
        except Exception as exc:
            piece.state = "done"
            self._unlink(piece)
            self.errors.append(f"play: {exc}")
            raise PlaybackError(f"playback command failed: {exc}") from exc
        if self.done:  # interrupted or closed while the command was in flight
            self._unlink(piece)
            return
        self._mark_cmd_sent(sent_at)

    def on_event(self, name: str, headers: Mapping[str, str]) -> None:
        """Feed one ESL event of this call (any event; unrelated ones are ignored)."""
        if name == "PLAYBACK_START":
            path = unquote(headers.get("Playback-File-Path", ""))
            for p in self.pieces:
                if p.path is not None and str(p.path) == path:
                    self._piece_started(p)
            self._repause()
            return
        if name not in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
            return
        piece = self._by_uuid.get(unquote(headers.get("Application-UUID", "")))
        if piece is None:
            return
        if name == "CHANNEL_EXECUTE":
            self._piece_started(piece)
            self._repause()
            return
        response = unquote(headers.get("Application-Response", ""))
        if response == "FILE NOT FOUND":
            piece.state = "notfound"
            self.errors.append(f"FILE NOT FOUND: {piece.path}")
            self.log.warning("playback_file_not_found", path=str(piece.path))
        else:
            piece.state = "done"
        self._unlink(piece)
        if not self.done:
            self._maybe_done()

    def _piece_started(self, piece: _Piece) -> None:
        if piece.state == "queued":
            piece.state = "playing"
        if not self.done:
            self._mark_started(time.monotonic())

    def _stop_at_switch(self) -> None:
        self.switch_paused = False       # the paused file (if any) ends with the break
        try:
            self.transport.stop_playback()
        except Exception as exc:
            self.errors.append(f"stop: {exc}")
            raise PlaybackError(f"stop_playback failed: {exc}") from exc

    def _toggle(self) -> bool:
        try:
            ok = self.transport.toggle_pause()
        except Exception as exc:
            self.errors.append(f"pause: {exc}")
            raise PlaybackError(f"uuid_fileman pause failed: {exc}") from exc
        if ok:
            self.switch_paused = not self.switch_paused
        return ok

    def _pause_at_switch(self) -> None:
        if not self.switch_paused:
            self._toggle()          # False: no file yet; _repause sends it when one starts

    def _unpause_at_switch(self) -> None:
        if self.switch_paused and not self._toggle():
            self.switch_paused = False   # no file any more: nothing is paused at the switch

    def _repause(self) -> None:
        """A piece started while we hold a pause that found no file: pause it now. Never
        when a file is already paused by us (that would toggle it back on)."""
        if self.paused and not self.switch_paused and not self.done:
            try:
                self._toggle()
            except PlaybackError as exc:
                self.log.warning("playback_repause_failed", error=str(exc))

    def _unlink(self, piece: _Piece) -> None:
        if piece.path is not None:
            try:
                piece.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.log.warning("playback_file_unlink_failed", path=str(piece.path),
                                 error=str(exc))

    def _release(self) -> None:
        # Unlinking a file FreeSWITCH has open is safe: its open descriptor keeps reading.
        for piece in self.pieces:
            self._unlink(piece)


class StreamPlayback(PlaybackHandle):
    """Streams pieces as paced L16 frames on the jambonz fork WebSocket (see the module
    docstring). ``send_binary`` / ``send_text`` write one WebSocket message each; when one
    returns ``False`` (no live fork, as ``ForkServer.send_*`` do) the handle ends with an
    error instead of pacing audio into nothing."""

    mode = "stream"

    def __init__(self, send_binary: Callable[[bytes], object],
                 send_text: Callable[[str], object],
                 rate: int, turn: Turn | None = None, metrics: Metrics | None = None,
                 interruptible: bool = True, call_uuid: str = "", frame_ms: int = 20,
                 lead_ms: int = 200, mark_grace_s: float = 0.3, tail_ms: int = 200) -> None:
        super().__init__(turn, metrics, interruptible, call_uuid)
        self.send_binary = send_binary
        self.send_text = send_text
        self.rate = rate
        self.frame_bytes = rate * frame_ms // 1000 * 2
        self.lead_s = lead_ms / 1000
        self.tail_frames = max(0, tail_ms // frame_ms)
        self.mark_grace_s = mark_grace_s
        self._outbox: deque[bytes | _Piece] = deque()
        # sent and maybe not played out yet: (when the caller hears it, its length, item)
        self._sent: deque[tuple[float, float, bytes | _Piece]] = deque()
        self._t0: float | None = None       # the pacing clock: stream second 0 ...
        self._sent_s = 0.0                  # ... and how many seconds were sent since
        # the item the pacer took from the outbox and is waiting to send or sending (a pause
        # meanwhile puts it back in the outbox and sets this to None)
        self._holding: bytes | _Piece | None = None
        self._wake = gevent.event.Event()
        self._pacer: gevent.Greenlet[Any, Any] | None = None
        self._by_name: dict[str, _Piece] = {}
        # the module holds this much before it plays (at most what we send ahead of time)
        self.prebuffer_s = min(self.lead_s, 1280 / rate)
        self.marks_back = 0          # playout marks of this reply that came back
        self.marks_missing = False   # the reply ended by the mark-wait bound

    def _assume_started(self) -> None:
        """No playout mark says when the caller began to hear the reply: estimate it as the
        first frame plus the module's pre-buffer (never later than now)."""
        if self.started is None and self.cmd_sent is not None:
            self._mark_started(min(time.monotonic(), self.cmd_sent + self.prebuffer_s))

    def add(self, chunk: AudioChunk) -> None:
        if self.done:
            return
        piece = self._new_piece(chunk)
        self._by_name[piece.event_uuid] = piece
        pcm = chunk.pcm
        if chunk.rate != self.rate:
            pcm = resample(np.frombuffer(pcm, dtype="<i2"), chunk.rate, self.rate)
        for off in range(0, len(pcm), self.frame_bytes):
            self._outbox.append(pcm[off:off + self.frame_bytes])
        self._outbox.append(piece)
        if self._pacer is None:
            self._pacer = gevent.spawn(self._pace)
        self._wake.set()

    def finish(self) -> None:
        if not self.finished and self.pieces and not self.done:
            # The module only starts (and restarts after an underrun) playing once its buffer
            # holds 640-1280 samples: pad the tail so the last piece is never stuck in it.
            silence = bytes(self.frame_bytes)
            self._outbox.extend(silence for _ in range(self.tail_frames))
        super().finish()
        self._wake.set()

    can_pause = True

    def _pace(self) -> None:
        bytes_per_s = self.rate * 2
        marks_due: float | None = None       # everything sent: the marks are due by then
        while not self.done:
            if self.paused or not self._outbox:
                if self.paused or not self.finished:
                    marks_due = None
                    self._wake.clear()
                    self._wake.wait(1.0)
                    continue
                # Everything is sent; wait for the playout marks, but not forever (a module
                # that does not echo marks, or a pause that cleared them when the pacing clock
                # said they had played out, would otherwise leave the reply "playing").
                now = time.monotonic()
                if marks_due is None:
                    left = 0.0 if self._t0 is None else self._sent_s - (now - self._t0)
                    marks_due = now + max(0.0, left) + self.mark_grace_s
                if now >= marks_due:
                    self._marks_missing()
                    return
                self._wake.clear()
                self._wake.wait(marks_due - now)
                continue
            marks_due = None
            item = self._outbox.popleft()
            if isinstance(item, _Piece):
                item.state = "playing"
                self._holding = item
                if self.send_text(json.dumps({"type": "mark", "data": {"name": item.event_uuid}},
                                             separators=(",", ":"))) is False:
                    self._fork_gone()
                    return
                if self._holding is None:         # paused during the write: it goes again
                    continue
                self._holding = None
                if self._t0 is not None:
                    self._sent.append((self._t0 + self._sent_s, 0.0, item))
                continue
            now = time.monotonic()
            if self._t0 is None or now - self._t0 > self._sent_s:  # first, or behind: re-anchor
                self._t0, self._sent_s = now, 0.0
            ahead = self._sent_s - (now - self._t0)
            self._holding = item
            if ahead > self.lead_s:
                gevent.sleep(ahead - self.lead_s)
                if self.done:
                    break
                if self._holding is None:         # a pause while we waited queued it again
                    continue
            if self.send_binary(item) is False:
                self._fork_gone()
                return
            if self.cmd_sent is None:
                self._mark_cmd_sent(time.monotonic())    # started: at the first mark echo
            if self.done:
                break
            if self._holding is None:   # paused during the write (it blocked): the module
                continue                # dropped this frame with the killAudio; it goes again
            self._holding = None
            length = len(item) / bytes_per_s
            self._sent.append((self._t0 + self._sent_s, length, item))
            self._sent_s += length
            heard_before = time.monotonic() - 1.0
            while self._sent and self._sent[0][0] + self._sent[0][1] < heard_before:
                self._sent.popleft()

    def _marks_missing(self) -> None:
        self.marks_missing = True
        self.log.warning("playback_marks_missing", pieces=len(self.pieces),
                         marks_back=self.marks_back, pauses=self.pauses)
        if self.metrics is not None:
            self.metrics.playback_marks_missing.inc()
        self._assume_started()
        for piece in self.pieces:
            piece.state = "done"
        self._maybe_done()

    def _pause_at_switch(self) -> None:
        """Drop the module's buffer and queue again what the caller has not heard yet."""
        now = time.monotonic()
        self._assume_started()                # the caller was hearing it
        if self._holding is not None:
            self._outbox.appendleft(self._holding)
            self._holding = None
        # a frame whose end the caller may not have heard yet goes again (the module starts
        # playing up to one 20 ms tick after our clock says): repeat ~a frame, lose none
        unheard = [item for at, length, item in self._sent if at + length > now - 0.02]
        self._sent.clear()
        self._outbox.extendleft(reversed(unheard))
        self._t0, self._sent_s = None, 0.0   # pacing starts afresh on unpause
        if self.send_text('{"type":"killAudio"}') is False:
            self._fork_gone()
            raise PlaybackError("fork WebSocket gone: the reply cannot be paused")

    def _unpause_at_switch(self) -> None:
        self._wake.set()

    def _fork_gone(self) -> None:
        self.errors.append("fork WebSocket gone")
        self.log.warning("playback_fork_gone", pieces=len(self.pieces))
        self._outbox.clear()
        self._set_done()

    def on_fork_message(self, message: Mapping[str, Any]) -> None:
        """Feed a parsed JSON text frame from the fork; only ``mark`` messages matter."""
        if message.get("type") != "mark" or not isinstance(message.get("data"), Mapping):
            return
        data = message["data"]
        piece = self._by_name.get(str(data.get("name", "")))
        if piece is None or data.get("event") != "playout":
            return
        self.marks_back += 1
        piece.state = "done"
        if self.started is None and self.cmd_sent is not None:
            # the module played everything up to the end of this piece: it began that long ago
            # (a pause after the first frame has set ``started`` already; one before it
            # paused nothing the caller heard)
            played = sum(p.duration_s for p in self.pieces[:piece.index + 1])
            self._mark_started(max(self.cmd_sent, time.monotonic() - played))
        if not self.done:
            self._maybe_done()
        if self.done:
            self._wake.set()                  # the pacer stops waiting for marks

    def _stop_at_switch(self) -> None:
        self._outbox.clear()
        self.send_text('{"type":"killAudio"}')
        self.send_text('{"type":"clearMarks"}')

    def _release(self) -> None:
        self._assume_started()        # cut or hung up before the first mark came back
        self._outbox.clear()
        self._wake.set()
        pacer, self._pacer = self._pacer, None
        if pacer is not None and pacer is not gevent.getcurrent():
            pacer.kill(block=True, timeout=1.0)
