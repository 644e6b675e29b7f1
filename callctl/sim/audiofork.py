"""mod_audio_fork emulation: the ``uuid_audio_fork`` api and the WebSocket client it runs.

How this works: ``uuid_audio_fork(line, lookup)`` (for the signalling half) or
``Media.fork_api(argv)`` parse a command with FreeSWITCH's tokenizer (``tokenize``: blanks or
a ``^^<c>`` delimiter, single quotes, backslash escapes, the last slot takes the rest of the
line) and apply it to the channel's ``ForkTable``; the reply bodies and usage texts are the
captured ones (fixtures 04/07). Each ``start`` attaches a ``Fork`` (one media bug) that
connects out with a hand-written upgrade request (same headers, same order as lws sends) and
then speaks RFC 6455 through wsproto's frame-level ``Connection``. The channel's media clock
hands every 20 ms frame to ``Fork.on_frame`` (never blocks); a writer greenlet sends queued
text first and then everything buffered as one binary message; a reader greenlet turns server
messages into CUSTOM ``mod_audio_fork::*`` events with the exact bodies (PROTOCOL.md §5.6).

Variants: ``jambonz`` (10 slots, ``stop_play``, marks, bidirectional streaming, one frame per
text, temp-file counter pre-incremented) and ``drachtio`` (7 slots, server binary discarded,
queued texts concatenated into one frame, counter from 0).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import gevent
import gevent.event
import numpy as np
import numpy.typing as npt
import soxr
from gevent import socket
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from callctl.sim.interfaces import ChannelSignals

__all__ = [
    "DEFAULT_BUG",
    "SUBPROTOCOL",
    "USAGE",
    "VARIANTS",
    "Fork",
    "ForkState",
    "ForkTable",
    "Tap",
    "run_command",
    "tokenize",
    "uuid_audio_fork",
]

VARIANTS = ("jambonz", "drachtio")
DEFAULT_BUG = "audio_fork"
SUBPROTOCOL = os.environ.get("MOD_AUDIO_FORK_SUBPROTOCOL_NAME", "audio.drachtio.org")
OK = "+OK Success\n"
FAIL = "-ERR Operation Failed\n"
USAGE = {
    "jambonz": "-USAGE: <uuid> [start | stop | send_text | pause | resume | graceful-shutdown"
               " | stop_play ] [wss-url | path] [mono | mixed | stereo] [8000 | 16000 | 24000"
               " | 32000 | 64000] [bugname] [metadata] [bidirectionalAudio_enabled]"
               " [bidirectionalAudio_stream_enabled] [bidirectionalAudio_stream_samplerate]\n",
    "drachtio": "-USAGE: <uuid> [start | stop | send_text | pause | resume | graceful-shutdown"
                " ] [wss-url | path] [mono | mixed | stereo] [8000 | 16000 | 24000 | 32000"
                " | 64000] [bugname] [metadata]\n",
}
MAX_SLOTS = {"jambonz": 10, "drachtio": 7}
CONNECT_TIMEOUT_S = 10.0
MAX_HANDSHAKE_BYTES = 16384
MAX_MESSAGE_BYTES = 65 * 1024 * 10
MAX_TEXT_QUEUE = 1000
MAX_MARKS = 30
MAX_STREAM_S = 60.0
BUFFER_SECS = min(5, max(1, int(os.environ.get("MOD_AUDIO_FORK_BUFFER_SECS", "2") or 2)))
RAW_EXT = {8000: ".r8", 16000: ".r16", 24000: ".r24", 32000: ".r32", 48000: ".r48",
           64000: ".r64"}

Samples = npt.NDArray[np.int16]
_file_counter = {"jambonz": 0, "drachtio": 0}


class Tap(Protocol):
    """Receives each media-clock frame; must not block."""

    def on_frame(self, read: Samples, write: Samples | None, t: float) -> None:
        """``read`` = caller audio, ``write`` = audio sent to the caller or None (silence)."""


class ForkHost(Protocol):
    """What a fork needs from the channel's media (implemented by ``media.Media``)."""

    signals: ChannelSignals
    rate: int
    frame_samples: int
    temp_dir: str
    fork_variant: str
    log: Any

    def add_tap(self, tap: Tap) -> None: ...
    def remove_tap(self, tap: Tap) -> None: ...
    def kill_audio(self) -> None: ...


# -- FreeSWITCH's tokenizer (switch_separate_string) -------------------------------------
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(token: str, delim: str) -> str:
    """cleanup_separated_string: drop quotes, unescape, trim blanks not inside quotes."""
    out: list[str] = []
    end = 0
    quoted = False
    i = 0
    s = token.lstrip(" ")
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            e = s[i + 1]
            if e in ("'", '"', "\\") or e == delim or e in _UNESCAPE:
                out.append(_UNESCAPE.get(e, e))
                end = len(out)
                i += 2
                continue
        if c == "'":
            quoted = not quoted
        else:
            out.append(c)
            if c != " " or quoted:
                end = len(out)
        i += 1
    return "".join(out[:end])


def tokenize(line: str, max_slots: int) -> list[str]:
    """Split an api argument string like FreeSWITCH's ``switch_separate_string``: on blanks
    (runs count as one), or on ``<c>`` when the line starts with ``^^<c>``; single quotes
    group, backslash escapes; at most ``max_slots`` tokens, the last takes the rest of the
    line; a trailing empty field is dropped. Never raises for any string."""
    delim = " "
    if line.startswith("^^") and len(line) >= 4:
        delim, line = line[2], line[3:]
    starts: list[int] = []
    ends: list[int] = []
    quoted = False
    i, n = 0, len(line)
    state = "start"
    while i < n:
        c = line[i]
        if state == "start":
            starts.append(i)
            ends.append(n)
            if len(starts) == max_slots:
                break                    # the last slot takes the rest of the line
            state = "skip" if delim == " " else "find"
            continue
        if state == "skip":
            if c == " ":
                i += 1
            else:
                state = "find"
            continue
        if state == "find":
            if c == "\\":
                i += 1
            elif c == "'":
                quoted = not quoted
            elif c == delim and not quoted:
                ends[-1] = i
                state = "skip_end" if delim == " " else "start"
            i += 1
            continue
        if c == " ":        # skip_end
            i += 1
        else:
            state = "start"
    return [_cleanup(line[s:e], delim) for s, e in zip(starts, ends, strict=True)]


# -- api ---------------------------------------------------------------------------------
def uuid_audio_fork(line: str, lookup: Callable[[str], Any], variant: str = "jambonz") -> str:
    """The whole ``api uuid_audio_fork <line>``: tokenizes ``line`` (uuid included), finds the
    channel's media with ``lookup(uuid)`` (returns an object with a ``forks: ForkTable``
    attribute, or None) and returns the api body."""
    argv = tokenize(line, MAX_SLOTS[variant]) if line.strip() else []
    if len(argv) < 2 or (argv[1] == "start" and len(argv) < 4):
        return USAGE[variant]
    media = lookup(argv[0])
    if media is None:
        return FAIL
    table: ForkTable = media.forks
    return run_command(table, argv)


def run_command(table: ForkTable, argv: list[str]) -> str:
    """Apply tokenized ``argv`` (``[uuid, cmd, …]``) to ``table``; returns the api body.
    Mirrors the module's ``fork_function``: an invalid mix type or a ``send_text`` without
    text reply with an empty body (the module jumps over its reply)."""
    variant = table.variant
    slots = MAX_SLOTS[variant]
    if len(argv) > slots:            # pre-split argv: the last slot takes the rest
        argv = [*argv[: slots - 1], " ".join(argv[slots - 1:])]
    argc = len(argv)
    if argc < 2 or (argv[1] == "start" and argc < 4):
        return USAGE[variant]
    cmd = argv[1].lower()
    bug = DEFAULT_BUG
    if cmd == "stop":
        text = None
        if argc > 3:
            bug, text = argv[2], argv[3]
        elif argc > 2:
            if argv[2][:1] in ("{", "["):
                text = argv[2]
            else:
                bug = argv[2]
        return OK if table.stop(bug, text) else FAIL
    if cmd == "stop_play" and variant == "jambonz":
        return OK if table.stop_play(DEFAULT_BUG) else FAIL
    if cmd in ("pause", "resume", "graceful-shutdown"):
        if argc > 2:
            bug = argv[2]
        fork = table.get(bug)
        if fork is None:
            return FAIL
        if cmd == "graceful-shutdown":
            fork.graceful_shutdown()
        else:
            fork.set_paused(cmd == "pause")
        return OK
    if cmd == "send_text":
        if argc < 3:
            return ""
        text = None
        if argc > 3:
            bug, text = argv[2], argv[3]
        elif argv[2][:1] in ("{", "["):
            text = argv[2]
        else:
            bug = argv[2]
        fork = table.get(bug)
        if fork is None or text is None:
            return FAIL
        fork.send_text(text)
        return OK
    if cmd == "start":
        return _start(table, argv)
    return FAIL


def _start(table: ForkTable, argv: list[str]) -> str:
    argc = len(argv)
    if argc < 5:
        return FAIL          # the real module dereferences the missing rate here
    bug, metadata = DEFAULT_BUG, None
    bidi_enabled, bidi_stream, bidi_rate = True, False, 0
    if table.variant == "jambonz" and argc > 9:
        bug = argv[5] or DEFAULT_BUG
        metadata = argv[6] or None
        bidi_enabled = argv[7] == "true"
        bidi_stream = argv[8] == "true"
        bidi_rate = _atoi(argv[9])
    elif argc > 6:
        bug, metadata = argv[5], argv[6]
    elif argc > 5:
        if argv[5][:1] in ("{", "["):
            metadata = argv[5]
        else:
            bug = argv[5]
    mix = argv[3]
    if mix not in ("mono", "mixed", "stereo"):
        return ""
    rate = {"16k": 16000, "8k": 8000}.get(argv[4], _atoi(argv[4]))
    if rate <= 0 or rate % 8000:
        rate = 8000 if rate <= 0 else rate - rate % 8000 or 8000
    streaming = table.variant == "jambonz" and bidi_enabled and bidi_stream and bidi_rate > 0
    ok = table.start(bug, argv[2], mix, rate, metadata, bidi_rate if streaming else 0)
    return OK if ok else FAIL


def _atoi(s: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", s)
    return int(m.group(1)) if m else 0


def parse_ws_url(url: str) -> tuple[str, int, str, bool] | None:
    """(host, port, path, tls) for ws/wss/http/https URLs (any case); None if unparsable."""
    m = re.match(r"(?i)(wss?|https?)://(.*)$", url)
    if not m:
        return None
    tls = m.group(1).lower() in ("wss", "https")
    rest = re.match(r"([^/:]+):?([0-9]*)?(/.*)?$", m.group(2))
    if not rest:
        return None
    port = int(rest.group(2)) if rest.group(2) else (443 if tls else 80)
    return rest.group(1), port, rest.group(3) or "/", tls


# -- per-channel table of bugs -------------------------------------------------------------
class ForkTable:
    """The audio-fork bugs attached to one channel, by bug name."""

    def __init__(self, host: ForkHost) -> None:
        self.host = host
        self.forks: dict[str, Fork] = {}

    @property
    def variant(self) -> str:
        """``jambonz`` or ``drachtio``."""
        return self.host.fork_variant

    def get(self, bug: str) -> Fork | None:
        """The fork attached as ``bug``, if any."""
        return self.forks.get(bug)

    def start(self, bug: str, url: str, mix: str, rate: int, metadata: str | None,
              bidi_rate: int = 0) -> bool:
        """Attach a bug and start connecting; False if the bug already exists."""
        if bug in self.forks:
            return False
        fork = Fork(self.host, bug, url, mix, rate, metadata, bidi_rate)
        self.forks[bug] = fork
        fork.start()
        return True

    def stop(self, bug: str, text: str | None) -> bool:
        """Detach ``bug``: final text, Close 1000, temp files deleted; False if absent."""
        fork = self.forks.pop(bug, None)
        if fork is None:
            return False
        fork.stop(text)
        return True

    def stop_play(self, bug: str) -> bool:
        """jambonz ``stop_play``: drop the buffered streamed audio of ``bug``."""
        fork = self.forks.get(bug)
        if fork is None:
            return False
        fork.clear_stream(report_marks=False)
        return True

    def stream_frames(self, n: int) -> Iterator[tuple[str, Samples | None]]:
        """One frame of bidirectional stream audio per streaming fork (None = nothing)."""
        for name, fork in list(self.forks.items()):
            if fork.bidi_rate:
                yield name, fork.pull_stream(n)

    def hangup(self) -> None:
        """Channel hung up: every fork gets Close 1000 (no text, no event)."""
        for bug in list(self.forks):
            self.stop(bug, None)


class ForkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"               # connect_failed fired; bug stays until stop
    SERVER_CLOSED = "server_closed"  # disconnect fired; bug stays until stop
    CLOSED = "closed"               # stopped by us (stop or hangup)


# Allowed transitions (anything else is a bug in this module and raises).
_TRANSITIONS: dict[ForkState, frozenset[ForkState]] = {
    ForkState.CONNECTING: frozenset({ForkState.CONNECTED, ForkState.FAILED, ForkState.CLOSED}),
    ForkState.CONNECTED: frozenset({ForkState.SERVER_CLOSED, ForkState.CLOSED}),
    ForkState.FAILED: frozenset({ForkState.CLOSED}),
    ForkState.SERVER_CLOSED: frozenset({ForkState.CLOSED}),
    ForkState.CLOSED: frozenset(),
}


class _Resampler:
    """Fixed-size frames out of a streaming resampler (first output primed with zeros)."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.channels = channels
        self.stream = (soxr.ResampleStream(in_rate, out_rate, channels, dtype="int16")
                       if in_rate != out_rate else None)
        self.out_frame = out_rate // 50
        self.fifo = np.zeros((self.out_frame, channels), np.int16)

    def frame(self, x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        x2 = x.reshape(-1, self.channels)
        if self.stream is None:
            return x2
        y = self.stream.resample_chunk(x2 if self.channels > 1 else x2[:, 0])
        self.fifo = np.concatenate([self.fifo, np.asarray(y).reshape(-1, self.channels)])
        out = np.zeros((self.out_frame, self.channels), np.int16)
        take = min(self.out_frame, len(self.fifo))
        out[:take] = self.fifo[:take]
        self.fifo = self.fifo[take:]
        return out


class Fork:
    """One mod_audio_fork media bug with its WebSocket client (see module doc)."""

    def __init__(self, host: ForkHost, bug: str, url: str, mix: str, rate: int,
                 metadata: str | None, bidi_rate: int = 0) -> None:
        self.host = host
        self.bug = bug
        self.url = url
        self.mix = mix
        self.rate = rate
        self.metadata = metadata
        self.bidi_rate = bidi_rate
        self.variant = host.fork_variant
        self.state = ForkState.CONNECTING
        self.paused = False
        self.draining = False
        self.files: list[str] = []
        channels = 2 if mix == "stereo" else 1
        self._resampler = _Resampler(host.rate, rate, channels)
        self._audio: deque[bytes] = deque()
        self._audio_bytes = 0
        self._max_audio_bytes = 320 * rate // 8000 * channels * 50 * BUFFER_SECS
        self._overrun_reported = False
        self._texts: deque[str] = deque()
        self._empty_frame_pending = False
        self._wake = gevent.event.Event()
        self._sock: socket.socket | None = None
        self._ws: Connection | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._partial: list[str | bytes] = []
        self._partial_bytes = 0
        # bidirectional stream (jambonz)
        self._stream = np.zeros(0, np.int16)
        self._stream_pos = 0                      # samples consumed since start
        self._stream_playing = False
        self._stream_started_once = False
        self._stream_odd = b""
        self._stream_rs = (soxr.ResampleStream(bidi_rate, host.rate, 1, dtype="int16")
                           if bidi_rate and bidi_rate != host.rate else None)
        # marks as the jambonz module keeps them (lws_glue.cpp): names received with no audio
        # after them yet; names whose marker sits in the stream (at these sample positions,
        # in order); names a killAudio/clearMarks cleared, which the next markers that reach
        # playout consume silently before any name in use
        self._mark_inventory: deque[str] = deque()
        self._marks_in_use: deque[str] = deque()
        self._marker_pos: deque[int] = deque()
        self._marks_cleared: deque[str] = deque()

    # -- lifecycle ------------------------------------------------------------------------
    def _set_state(self, new: ForkState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"fork {self.bug}: illegal transition {self.state} -> {new}")
        self.state = new

    def _fire(self, subclass: str, body: Any = None) -> None:
        text = None if body is None else (
            body if isinstance(body, str) else json.dumps(
                body, separators=(",", ":"), ensure_ascii=False))
        self.host.signals.fire_custom(f"mod_audio_fork::{subclass}", text)

    def start(self) -> None:
        """MEDIA_BUG_START, then connect in the background."""
        self.host.signals.fire_event("MEDIA_BUG_START", {"Media-Bug-Function": self.bug,
                                                         "Media-Bug-Target": "N/A"})
        self._greenlets.append(gevent.spawn(self._connect_and_read))

    def stop(self, text: str | None) -> None:
        """stop / hangup: optional final text, Close 1000, bug removed, temp files deleted."""
        if self.state is ForkState.CLOSED:
            return
        was_connected = self.state is ForkState.CONNECTED
        self._set_state(ForkState.CLOSED)
        self.host.remove_tap(self)
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current], block=True, timeout=1)
        if was_connected and self._ws is not None and self._sock is not None:
            with contextlib.suppress(OSError, LocalProtocolError):
                out = b""
                if text is not None and not self.draining:
                    out += self._ws.send(TextMessage(data=text))
                out += self._ws.send(CloseConnection(code=1000))
                self._sock.sendall(out)
                self._sock.settimeout(1.0)
                self._sock.recv(4096)     # the server's Close reply (or EOF), at most 1 s
        self._close_socket()
        self.clear_stream(report_marks=False)
        for path in self.files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.files.clear()
        self.host.signals.fire_event("MEDIA_BUG_STOP", {"Media-Bug-Function": self.bug,
                                                        "Media-Bug-Target": "N/A"})

    def _close_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _connect_and_read(self) -> None:
        reason = self._connect()
        if reason is not None:
            self._close_socket()
            if self.state is ForkState.CONNECTING:
                self._set_state(ForkState.FAILED)
                self._fire("connect_failed", {"reason": reason})
            return
        self._set_state(ForkState.CONNECTED)
        self._fire("connect")
        if self.metadata is not None:
            self._texts.appendleft(self.metadata)
        self.host.add_tap(self)
        self._greenlets.append(gevent.spawn(self._write_loop))
        self._wake.set()
        self._read_loop()

    def _connect(self) -> str | None:
        """Open the socket and do the handshake; returns an lws-style failure reason."""
        parsed = parse_ws_url(self.url)
        if parsed is None:
            return "Unable to connect"
        host, port, path, tls = parsed
        if tls:
            return "Unable to connect"        # the emulator speaks plain ws:// only
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            return "Unable to connect"
        self._sock = sock
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\n"
            "Pragma: no-cache\r\n"
            "Cache-Control: no-cache\r\n"
            f"Host: {host}\r\n"
            f"Origin: http://{host}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        )
        buf = b""
        try:
            sock.sendall(request.encode())
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(4096)
                if not chunk:
                    return "HS: ws upgrade response not 101"
                buf += chunk
                if len(buf) > MAX_HANDSHAKE_BYTES:
                    return "HS: ws upgrade response not 101"
        except OSError:
            return "Unable to connect"
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not re.match(r"HTTP/1\.1 101\b", lines[0]):
            return "HS: ws upgrade response not 101"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            return "HS: Accept hash wrong"
        if "sec-websocket-protocol" in headers and \
                headers["sec-websocket-protocol"] != SUBPROTOCOL:
            return "HS: PROTOCOL malformed"
        sock.settimeout(None)
        self._ws = Connection(ConnectionType.CLIENT, trailing_data=rest)
        return None

    # -- audio out ------------------------------------------------------------------------
    def on_frame(self, read: Samples, write: Samples | None, t: float) -> None:
        """Media-clock frame (never blocks). mono: caller; mixed: caller+sent audio;
        stereo: L=caller, R=sent audio. mixed/stereo send nothing while nothing plays."""
        if self.state is not ForkState.CONNECTED or self.paused or self.draining:
            return
        if self.mix == "mono":
            frame = read
        elif write is None:
            return
        elif self.mix == "mixed":
            frame = np.clip(read.astype(np.int32) + write, -32768, 32767).astype(np.int16)
        else:
            frame = np.stack([read, write], axis=1).reshape(-1)
        data = self._resampler.frame(frame).astype("<i2").tobytes()
        if self._audio_bytes + len(data) > self._max_audio_bytes:
            self._audio.clear()
            self._audio_bytes = 0
            if not self._overrun_reported:
                self._overrun_reported = True
                self._fire("buffer_overrun")
            return
        self._audio.append(data)
        self._audio_bytes += len(data)
        self._wake.set()

    def send_text(self, text: str) -> None:
        """Queue one text frame (dropped after graceful-shutdown; bounded)."""
        if self.draining or len(self._texts) >= MAX_TEXT_QUEUE:
            return
        self._texts.append(text)
        self._wake.set()

    def set_paused(self, paused: bool) -> None:
        """pause: no audio at all (buffer flushed) until resume."""
        self.paused = paused
        if paused:
            self._audio.clear()
            self._audio_bytes = 0

    def graceful_shutdown(self) -> None:
        """Stop audio and texts, send one zero-length binary frame, keep the socket open."""
        if self.draining:
            return
        self.draining = True
        self._audio.clear()
        self._audio_bytes = 0
        self._texts.clear()
        self._empty_frame_pending = True
        self._wake.set()

    def _write_loop(self) -> None:
        while self.state is ForkState.CONNECTED:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._flush()
            except (OSError, LocalProtocolError):
                return

    def _flush(self) -> None:
        ws, sock = self._ws, self._sock
        if ws is None or sock is None or self.state is not ForkState.CONNECTED:
            return
        out = b""
        if self._texts:
            if self.variant == "drachtio":
                out += ws.send(TextMessage(data="".join(self._texts)))
            else:
                out += b"".join(ws.send(TextMessage(data=t)) for t in self._texts)
            self._texts.clear()
        if self._empty_frame_pending:
            self._empty_frame_pending = False
            out += ws.send(BytesMessage(data=b""))
        if self._audio:
            out += ws.send(BytesMessage(data=b"".join(self._audio)))
            self._audio.clear()
            self._audio_bytes = 0
        if out:
            sock.sendall(out)

    # -- server messages ------------------------------------------------------------------
    def _read_loop(self) -> None:
        ws, sock = self._ws, self._sock
        assert ws is not None and sock is not None
        while self.state is ForkState.CONNECTED:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            try:
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, TextMessage | BytesMessage):
                        self._collect(event)
                    elif isinstance(event, Ping):
                        sock.sendall(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        with contextlib.suppress(LocalProtocolError):
                            sock.sendall(ws.send(event.response()))
                        data = b""
            except (RemoteProtocolError, LocalProtocolError, OSError) as exc:
                self.host.log.warning("sim.fork_protocol_error", bug=self.bug, error=str(exc))
                data = b""
            if not data:
                if self.state is ForkState.CONNECTED:
                    self._set_state(ForkState.SERVER_CLOSED)
                    self.host.remove_tap(self)
                    self._close_socket()
                    self._fire("disconnect")
                return

    def _collect(self, event: TextMessage | BytesMessage) -> None:
        self._partial.append(event.data if isinstance(event.data, str) else bytes(event.data))
        self._partial_bytes += len(event.data)
        if not event.message_finished:
            if self._partial_bytes > MAX_MESSAGE_BYTES:
                self._partial, self._partial_bytes = [], 0
            return
        parts, self._partial, self._partial_bytes = self._partial, [], 0
        if isinstance(event, TextMessage):
            self.handle_text("".join(str(p) for p in parts))
        else:
            self.handle_binary(b"".join(p for p in parts if isinstance(p, bytes)))

    def handle_text(self, text: str) -> None:
        """One complete text message from the server (PROTOCOL.md §5.6)."""
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            self.host.log.info("sim.fork_invalid_json", bug=self.bug)
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if not isinstance(kind, str) or kind == "json":
            self._fire("json", msg)
            return
        data = msg.get("data")
        if kind in ("transcription", "transfer", "error"):
            self._fire(kind, data)
        elif kind == "disconnect":
            self._fire("disconnect", data)
        elif kind == "playAudio":
            self._play_audio(data)
        elif kind == "killAudio":
            self.host.kill_audio()
            if self.variant == "jambonz":
                self.clear_stream(report_marks=True)
            self._fire("kill_audio")
        elif kind == "mark" and self.variant == "jambonz":
            name = data.get("name") if isinstance(data, dict) else None
            if isinstance(name, str) \
                    and len(self._marks_in_use) + len(self._mark_inventory) < MAX_MARKS:
                self._mark_inventory.append(name)
        elif kind == "clearMarks" and self.variant == "jambonz":
            self._marks_cleared.extend(self._marks_in_use)
            self._marks_cleared.extend(self._mark_inventory)
            self._marks_in_use.clear()
            self._mark_inventory.clear()
        else:
            self.host.log.info("sim.fork_unsupported_msg", bug=self.bug, type=kind)

    def _play_audio(self, data: Any) -> None:
        if self.bidi_rate:
            return                       # jambonz ignores playAudio while streaming
        if not isinstance(data, dict) or "audioContentType" not in data:
            self.host.log.warning("sim.fork_play_audio_invalid", bug=self.bug)
            return
        ctype = data.get("audioContentType")
        rate = data.get("sampleRate")
        ext = None
        if ctype == "raw":
            ext = RAW_EXT.get(rate if isinstance(rate, int) else 0, ".r16")
        elif ctype in ("wave", "wav"):
            ext = ".wav"
        body = {k: v for k, v in data.items() if k != "audioContent"}
        if ext is not None:
            try:
                audio = base64.b64decode(str(data.get("audioContent", "")), validate=False)
            except (binascii.Error, ValueError):
                audio = b""
            if self.variant == "jambonz":
                _file_counter["jambonz"] += 1
                n = _file_counter["jambonz"]
            else:
                n = _file_counter["drachtio"]
                _file_counter["drachtio"] += 1
            path = os.path.join(self.host.temp_dir, f"{self.host.signals.uuid}_{n}.tmp{ext}")
            try:
                with open(path, "wb") as f:
                    f.write(audio)
            except OSError as exc:
                self.host.log.warning("sim.fork_play_audio_write_failed", path=path,
                                      error=str(exc))
                return
            self.files.append(path)
            body["file"] = path
        self._fire("play_audio", body)

    # -- bidirectional stream (jambonz) ---------------------------------------------------
    def handle_binary(self, data: bytes) -> None:
        """Server audio: played to the caller in streaming mode, else discarded."""
        if not self.bidi_rate or self.state is not ForkState.CONNECTED:
            return
        data = self._stream_odd + data
        cut = len(data) // 2 * 2
        self._stream_odd = data[cut:]
        x = np.frombuffer(data[:cut], "<i2").astype(np.int16)
        if self._stream_rs is not None:
            x = np.asarray(self._stream_rs.resample_chunk(x), np.int16)
        # marks received since the last audio go in front of this audio
        for name in self._mark_inventory:
            self._marker_pos.append(self._stream_pos + len(self._stream))
            self._marks_in_use.append(name)
        self._mark_inventory.clear()
        room = int(MAX_STREAM_S * self.host.rate) - len(self._stream)
        if room <= 0:
            return
        self._stream = np.concatenate([self._stream, x[:room]])

    def pull_stream(self, n: int) -> Samples | None:
        """Next ``n`` samples of streamed audio for the caller, or None (pre-buffering or
        empty). Sends mark ``playout`` texts as playout passes their markers; a marker takes
        a cleared name first (silently: jambonz reports nothing for it), so after a kill the
        next markers to play may report nothing. With nothing to play and no marker pending,
        one mark received after the last audio is reported played per frame."""
        if not self._stream_playing:
            threshold = 640 if self._stream_started_once else 1280
            if len(self._stream) < threshold * self.host.rate // 8000:
                if not self._marks_in_use and not self._marks_cleared \
                        and self._mark_inventory:
                    self._mark_text(self._mark_inventory.popleft(), "playout")
                return None
            self._stream_playing = self._stream_started_once = True
        out = np.zeros(n, np.int16)
        take = min(n, len(self._stream))
        out[:take] = self._stream[:take]
        self._stream = self._stream[take:]
        self._stream_pos += take
        if not len(self._stream):
            self._stream_playing = False
        while self._marker_pos and self._marker_pos[0] <= self._stream_pos:
            self._marker_pos.popleft()
            if self._marks_cleared:
                self._marks_cleared.popleft()
            elif self._marks_in_use:
                self._mark_text(self._marks_in_use.popleft(), "playout")
        return out if take else None

    def clear_stream(self, report_marks: bool) -> None:
        """killAudio (``report_marks``) / stop_play: discard the streamed audio and the markers
        in it. killAudio reports every pending mark ``cleared`` and keeps the names whose
        markers it dropped as cleared (the next markers to play consume them silently);
        stop_play leaves the names in use, so later markers report them."""
        self._stream_pos += len(self._stream)
        self._stream = np.zeros(0, np.int16)
        self._stream_playing = False
        self._marker_pos.clear()
        if report_marks:
            for name in (*self._marks_in_use, *self._mark_inventory):
                self._mark_text(name, "cleared")
            self._marks_cleared.extend(self._marks_in_use)
            self._marks_in_use.clear()
            self._mark_inventory.clear()
        interrupted = getattr(self.host, "stream_interrupted", None)
        if interrupted is not None:
            interrupted(self.bug)

    def _mark_text(self, name: str, event: str) -> None:
        quoted = json.dumps(name)
        self.send_text(f'{{"type": "mark", "data": {{"name":{quoted}, "event": "{event}"}}}}')
