"""Test-only helpers for the emulator tests: a small independent parser of FreeSWITCH→client
byte streams (the captures' ``*_recv_stream.txt`` and what the emulator sends), a reader of
the captures' ``*_raw.txt`` conversations, and a blocking ESL test client on gevent sockets.

Deliberately not shared with ``callctl.sim.eslcodec``: a bug there must not hide here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import gevent
from gevent import socket

MARK = re.compile(rb"^##### (RECV|SEND|NOTE) [^\n]*?(?: (\d+) bytes)?\n", re.M)


@dataclass
class Frame:
    """One frame FreeSWITCH wrote: outer headers, body; for events the parsed event."""

    headers: list[tuple[str, str]]
    body: bytes = b""
    ev_headers: list[tuple[str, str]] = field(default_factory=list)
    ev_body: bytes | None = None

    @property
    def ctype(self) -> str:
        return dict(self.headers).get("Content-Type", "")

    @property
    def is_event(self) -> bool:
        return self.ctype.startswith("text/event-")

    def ev(self, name: str) -> str | None:
        """Decoded event header value (first occurrence)."""
        for k, v in self.ev_headers:
            if k == name:
                return v
        return None

    @property
    def name(self) -> str:
        """Event-Name; the LAST one (PRIVATE_COMMAND of uuid_broadcast carries two)."""
        names = [v for k, v in self.ev_headers if k == "Event-Name"]
        return names[-1] if names else ""

    def names(self) -> list[str]:
        """Event header names in order."""
        return [k for k, _ in self.ev_headers]


def parse_stream(data: bytes) -> tuple[list[Frame], bytes]:
    """Split a FreeSWITCH→client stream into frames; returns (frames, unparsed rest)."""
    frames: list[Frame] = []
    i = 0
    while True:
        j = data.find(b"\n\n", i)
        if j < 0:
            break
        head = data[i:j].decode()
        hdrs = [(k, v) for k, _, v in (ln.partition(": ") for ln in head.split("\n")) if k]
        clen = int(dict(hdrs).get("Content-Length", "0"))
        if len(data) < j + 2 + clen:
            break
        body = data[j + 2:j + 2 + clen]
        i = j + 2 + clen
        fr = Frame(hdrs, body)
        ctype = fr.ctype
        if ctype == "text/event-plain":
            fr.ev_headers, fr.ev_body = parse_plain_event(body)
        elif ctype == "text/event-json":
            fr.ev_headers, fr.ev_body = parse_json_event(body)
        frames.append(fr)
    return frames, data[i:]


def parse_plain_event(body: bytes) -> tuple[list[tuple[str, str]], bytes | None]:
    """URL-decoded headers of a text/event-plain body, plus its own body if any."""
    head, _, rest = body.partition(b"\n\n")
    hdrs: list[tuple[str, str]] = []
    ev_body = None
    for ln in head.decode().split("\n"):
        k, _, v = ln.partition(": ")
        hdrs.append((k, unquote(v)))
    if dict(hdrs).get("Content-Length") is not None:
        ev_body = rest
    return hdrs, ev_body


def parse_json_event(body: bytes) -> tuple[list[tuple[str, str]], bytes | None]:
    import json
    pairs: list[tuple[str, str]] = json.loads(body, object_pairs_hook=lambda p: p)
    out = [(k, v) for k, v in pairs if k != "_body"]
    bodies = [v for k, v in pairs if k == "_body"]
    return out, bodies[0].encode() if bodies else None


def raw_encoded_value(frame: Frame, name: str) -> str | None:
    """The still URL-encoded value of an event-plain header (to check the encoding)."""
    for ln in frame.body.split(b"\n\n", 1)[0].decode().split("\n"):
        k, _, v = ln.partition(": ")
        if k == name:
            return v
    return None


def conversation(path: Path) -> list[tuple[str, bytes]]:
    """A ``*_raw.txt`` capture as ("SEND"|"RECV", bytes) chunks in order."""
    data = path.read_bytes()
    out: list[tuple[str, bytes]] = []
    for m in MARK.finditer(data):
        kind = m.group(1).decode()
        if kind == "NOTE":
            continue
        n = int(m.group(2))
        out.append((kind, data[m.end():m.end() + n]))
    return out


def sends_with_frames_before(path: Path) -> list[tuple[bytes, int]]:
    """Each client SEND of a capture with the number of complete frames FreeSWITCH had sent
    before it (so a replay can wait for the same point of the conversation)."""
    received = b""
    out: list[tuple[bytes, int]] = []
    for kind, chunk in conversation(path):
        if kind == "RECV":
            received += chunk
        else:
            out.append((chunk, len(parse_stream(received)[0])))
    return out


class EslClient:
    """A blocking (gevent) ESL client that keeps every frame it received."""

    def __init__(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else socket.create_connection((host, port), 5)
        self.raw = b""
        self.frames: list[Frame] = []
        self.eof = False
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.raw += data
                self.frames = parse_stream(self.raw)[0]
        except OSError:
            pass
        self.eof = True

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def wait_frames(self, n: int, timeout: float = 5.0) -> list[Frame]:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n and not self.eof and time.monotonic() < deadline:
            gevent.sleep(0.005)
        if len(self.frames) < n:
            raise AssertionError(f"got {len(self.frames)} frames, wanted {n}: "
                                 f"{[f.ctype + ' ' + f.name for f in self.frames][-5:]}")
        return self.frames

    def wait_for(self, pred: object, timeout: float = 5.0) -> Frame:
        """The first frame (from the start) that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for fr in self.frames:
                if pred(fr):  # type: ignore[operator]
                    return fr
            if self.eof:
                break
            gevent.sleep(0.005)
        raise AssertionError(f"no matching frame; last: "
                             f"{[f.ctype + ' ' + f.name for f in self.frames][-8:]}")

    def command(self, line: str, timeout: float = 5.0) -> Frame:
        """Send one command and return its reply (next non-event frame)."""
        before = sum(1 for f in self.frames if not f.is_event)
        self.send(line + "\n\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = [f for f in self.frames if not f.is_event]
            if len(replies) > before:
                return replies[before]
            if self.eof:
                break
            gevent.sleep(0.005)
        raise AssertionError(f"no reply to {line!r}")

    def wait_eof(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            gevent.sleep(0.005)
        return self.eof

    def close(self) -> None:
        self._reader.kill(block=False)
        self.sock.close()


def events_of(frames: list[Frame], uuid: str | None = None) -> list[Frame]:
    return [f for f in frames if f.is_event and (uuid is None or f.ev("Unique-ID") == uuid)]
