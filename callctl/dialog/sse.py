"""Server-sent events (``text/event-stream``) parser without I/O: bytes in, events out.

How this works: ``feed(bytes)`` buffers bytes, splits complete lines (``\\r\\n``, ``\\n`` or
``\\r``; a ``\\r`` at the end of the buffer waits for the next byte), decodes each as strict
UTF-8 and applies the WHATWG rules: ``data:`` lines append to the event's data (joined by
``\\n``), ``event:`` and ``id:`` set fields, ``:`` comments and unknown fields are ignored,
a blank line dispatches the event if it has data. ``close()`` dispatches a last event that
was not followed by a blank line (servers that end the stream right after ``data: [DONE]``).
The peer's garbage (invalid UTF-8, a line longer than ``max_line``) raises ``SseError``; the
buffer never grows past ``max_line`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 1 << 20


class SseError(Exception):
    """The event stream is malformed (the peer's fault). Not retryable on this stream."""


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str = ""


class SseParser:
    """Incremental event-stream parser. Feed bytes; get complete events."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._first = True
        self._closed = False

    def feed(self, data: bytes) -> list[SseEvent]:
        """Events completed by ``data`` (possibly none). Raises SseError on garbage."""
        if self._closed:
            raise SseError("data after close()")
        self._buf += data
        out: list[SseEvent] = []
        while True:
            cut = self._next_eol()
            if cut is None:
                break
            end, skip = cut
            line = bytes(self._buf[:end])
            del self._buf[:end + skip]
            event = self._line(line)
            if event is not None:
                out.append(event)
        if len(self._buf) > self.max_line:
            raise SseError(f"line longer than {self.max_line} bytes: {bytes(self._buf[:40])!r}…")
        return out

    def close(self) -> list[SseEvent]:
        """End of stream: the last unterminated line and event, if any."""
        if self._closed:
            return []
        out = []
        if self._buf:
            line = bytes(self._buf.rstrip(b"\r"))
            self._buf.clear()
            event = self._line(line)
            if event is not None:
                out.append(event)
        self._closed = True
        event = self._dispatch()
        if event is not None:
            out.append(event)
        return out

    def _next_eol(self) -> tuple[int, int] | None:
        buf = self._buf
        n = buf.find(b"\n")
        r = buf.find(b"\r", 0, n if n >= 0 else len(buf))
        if r >= 0:
            if r + 1 == len(buf):
                return None          # maybe \r\n split across feeds
            return r, 2 if buf[r + 1:r + 2] == b"\n" else 1
        if n >= 0:
            return n, 1
        return None

    def _line(self, raw: bytes) -> SseEvent | None:
        if len(raw) > self.max_line:
            raise SseError(f"line longer than {self.max_line} bytes: {raw[:40]!r}…")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SseError(f"line is not UTF-8 ({e.reason}): {raw[:40]!r}") from None
        if self._first:
            line = line.removeprefix("\ufeff")
            self._first = False
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent("\n".join(self._data), self._event or "message", self._id)
        self._data, self._event = [], ""
        return event


__all__ = ["SseError", "SseEvent", "SseParser"]
