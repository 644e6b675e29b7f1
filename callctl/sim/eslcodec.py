"""The emulator's own ESL wire codec (FreeSWITCH side), without any I/O.

Two halves:

* **Serializers** for every frame FreeSWITCH 1.10.12 writes to a client (PROTOCOL.md §1.3):
  ``auth_request``, ``command_reply``, ``api_response``, ``event_plain`` / ``event_json`` /
  ``event_xml``, ``log_data`` (with ``log_line``, the text of one log line),
  ``connect_reply`` (the outbound CHANNEL_DATA reply), ``disconnect_notice``,
  ``linger_notice`` and ``rude_rejection``. Header order, URL-encoding (``url_encode``, FS's
  ``switch_url_encode`` rule) and byte-exact ``Content-Length`` follow the captures in
  ``fixtures/freeswitch-1.10.12``.
* **CommandParser**, an incremental parser of client → FreeSWITCH command frames with
  mod_event_socket's ``read_packet`` rules: leading blank lines skipped, CR ignored (a header
  block ends at the second LF in a row, counting only LFs), ``name: value`` lines after the
  command line, an optional ``Content-Length`` body, header block ≤ 10 MiB and body ≤ 16 MiB.
  ``receive_data(bytes)`` then ``next_command()`` → ``Command`` or ``None`` (need more bytes).
  Peer garbage raises ``ESLCommandError`` (the only error it raises).

This module is deliberately independent from the daemon's ESL code, so that one shared bug
cannot hide on both sides of the wire.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

Header = tuple[str, str]

MAX_HEADER_BYTES = 10 * 1024 * 1024          # mod_event_socket: header block limit
MAX_CONTENT_LENGTH = 16 * 1024 * 1024        # mod_event_socket: MAX_CONTENT_LENGTH

GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"

_URL_UNSAFE = frozenset(b"\r\n #%&+:;<=>?@[\\]^`{|}\"")
_UPPER_HEX = frozenset(b"0123456789ABCDEF")


def url_encode(value: str) -> str:
    """FreeSWITCH's ``switch_url_encode`` (no double encoding) of one header value.

    Every UTF-8 byte < 0x20 or > 0x7E and every byte of ``SWITCH_URL_UNSAFE`` becomes ``%XX``
    (uppercase hex); a ``%`` already followed by two *uppercase* hex digits is kept as is.
    """
    raw = value.encode("utf-8", "surrogateescape")
    out = bytearray()
    n = len(raw)
    for i, b in enumerate(raw):
        if b == 0x25 and i + 2 < n and raw[i + 1] in _UPPER_HEX and raw[i + 2] in _UPPER_HEX:
            out.append(b)
        elif b < 0x20 or b > 0x7E or b in _URL_UNSAFE:
            out += b"%%%02X" % b
        else:
            out.append(b)
    return out.decode("ascii")


def _block(headers: Sequence[Header]) -> bytes:
    return "".join(f"{k}: {v}\n" for k, v in headers).encode("utf-8", "surrogateescape")


# ----------------------------------------------------------------------------- serializers

def auth_request() -> bytes:
    """Sent on every inbound connect: ``Content-Type: auth/request`` + blank line."""
    return b"Content-Type: auth/request\n\n"


def command_reply(text: str, extra: Sequence[Header] = ()) -> bytes:
    """``command/reply``; ``extra`` headers follow ``Reply-Text`` (bgapi's ``Job-UUID``)."""
    return _block([("Content-Type", "command/reply"), ("Reply-Text", text), *extra]) + b"\n"


def api_response(body: str | bytes) -> bytes:
    """``api/response`` with the API output verbatim (empty output → ``-ERR no reply\\n``)."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    if not data:
        data = b"-ERR no reply\n"
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def serialize_plain(headers: Sequence[Header], body: str | None = None) -> bytes:
    """``switch_event_serialize``: URL-encoded ``Name: value`` lines, then either
    ``Content-Length: n`` + blank line + raw body, or a blank line."""
    text = _block([(k, url_encode(v)) for k, v in headers])
    if body is not None:
        raw = body.encode("utf-8")
        return text + b"Content-Length: %d\n\n" % len(raw) + raw
    return text + b"\n"


def serialize_json(headers: Sequence[Header], body: str | None = None) -> bytes:
    """``switch_event_serialize_json``: one compact object of string members (values not
    URL-encoded; duplicate headers give duplicate keys, like cJSON), body as ``_body``."""
    parts = [f"{json.dumps(k, ensure_ascii=False)}:{json.dumps(v, ensure_ascii=False)}"
             for k, v in headers]
    if body is not None:
        parts.append(f'"Content-Length":"{len(body.encode("utf-8"))}"')
        parts.append(f'"_body":{json.dumps(body, ensure_ascii=False)}')
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def event_plain(headers: Sequence[Header], body: str | None = None) -> bytes:
    """A ``text/event-plain`` frame (Content-Length first, then Content-Type)."""
    data = serialize_plain(headers, body)
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(data) + data


def event_json(headers: Sequence[Header], body: str | None = None) -> bytes:
    """A ``text/event-json`` frame."""
    data = serialize_json(headers, body)
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(data) + data


def _xml_text(text: str) -> str:
    """``switch_xml_ampencode`` of character content (not an attribute), with FreeSWITCH's
    UTF-8 encoding on: ``&`` ``<`` ``>`` and CR become entities, every non-ASCII character
    ``&#x<HEX>;``; ``"`` and LF stay. A ``<!`` makes the rest of the text pass unescaped (the
    CDATA/comment pass-through of FreeSWITCH's encoder)."""
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == "<" and text[i + 1:i + 2] == "!":
            out.append(text[i:])
            break
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == "\r":
            out.append("&#xD;")
        elif ord(ch) > 0x7F:
            out.append(f"&#x{ord(ch):X};")
        else:
            out.append(ch)
    return "".join(out)


def serialize_xml(headers: Sequence[Header], body: str | None = None) -> bytes:
    """``switch_event_xmlize`` + ``switch_xml_toxml`` (no prolog): ``<event>``, a ``<headers>``
    element with one child per header (value URL-encoded, like ``event plain``), then — if the
    body is not empty — ``<Content-Length>`` (body bytes) and ``<body>``; two-space indent, one
    element per line, ending ``</event>\\n``. A body that ends in a newline gets its
    ``</body>`` indented, as ``switch_xml_toxml_r`` does."""
    lines = ["<event>", "  <headers>"]
    lines += [f"    <{k}>{_xml_text(url_encode(v))}</{k}>" for k, v in headers]
    lines.append("  </headers>")
    if body:
        lines.append(f"  <Content-Length>{len(body.encode('utf-8'))}</Content-Length>")
        text = _xml_text(body)
        # the encoder indents a closing tag that follows a newline
        lines.append(f"  <body>{text}{'  ' if text.endswith(chr(10)) else ''}</body>")
    lines.append("</event>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def event_xml(headers: Sequence[Header], body: str | None = None) -> bytes:
    """A ``text/event-xml`` frame (after ``event xml …``)."""
    data = serialize_xml(headers, body)
    return b"Content-Length: %d\nContent-Type: text/event-xml\n\n" % len(data) + data


LOG_LEVEL_NAMES = ("CONSOLE", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG")


def log_line(level: int, file: str, line: int, text: str, when: float | None = None) -> str:
    """One formatted log line as ``switch_log_meta_vprintf`` writes it (``node->data``):
    ``YYYY-MM-DD hh:mm:ss.uuuuuu [LEVEL] file:line text`` (local time). ``text`` carries its
    own trailing newline, as FreeSWITCH's format strings do."""
    now = time.time() if when is None else when
    micro = int((now % 1) * 1_000_000)
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return f"{date}.{micro:06d} [{LOG_LEVEL_NAMES[level]}] {file}:{line} {text}"


def log_data(level: int, text_channel: int, file: str, func: str, line: int,
             user_data: str | None, data: str) -> bytes:
    """A ``log/data`` frame: ``Content-Type``, ``Content-Length``, ``Log-Level``,
    ``Text-Channel``, ``Log-File``, ``Log-Func``, ``Log-Line``, ``User-Data`` in that order,
    values raw (not URL-encoded; ``User-Data`` empty when no session), then the line."""
    raw = data.encode("utf-8")
    return _block([
        ("Content-Type", "log/data"), ("Content-Length", str(len(raw))),
        ("Log-Level", str(level)), ("Text-Channel", str(text_channel)), ("Log-File", file),
        ("Log-Func", func), ("Log-Line", str(line)), ("User-Data", user_data or ""),
    ]) + b"\n" + raw


def connect_reply(headers: Sequence[Header], async_: bool = True, full: bool = True) -> bytes:
    """The outbound ``connect`` reply: a serialized CHANNEL_DATA event whose last headers are
    ``Content-Type: command/reply``, ``Reply-Text: %2BOK%0A``, ``Socket-Mode``, ``Control``."""
    tail = [("Content-Type", "command/reply"), ("Reply-Text", "+OK\n"),
            ("Socket-Mode", "async" if async_ else "static"),
            ("Control", "full" if full else "single-channel")]
    return serialize_plain([*headers, *tail])


def disconnect_notice(session_uuid: str | None = None, text: str = GOODBYE) -> bytes:
    """``text/disconnect-notice``. Session-bound sockets add ``Controlled-Session-UUID`` and
    ``Content-Disposition: disconnect``. FreeSWITCH closes the socket right after it."""
    raw = (text or "Disconnected.\n").encode("utf-8")
    hdrs: list[Header] = [("Content-Type", "text/disconnect-notice")]
    if session_uuid is not None:
        hdrs += [("Controlled-Session-UUID", session_uuid), ("Content-Disposition", "disconnect")]
    hdrs.append(("Content-Length", str(len(raw))))
    return _block(hdrs) + b"\n" + raw


def linger_notice(session_uuid: str, channel_name: str, linger_s: int | None) -> bytes:
    """The lingering outbound socket's notice when its channel hangs up (values raw)."""
    return _block([
        ("Content-Type", "text/disconnect-notice"),
        ("Controlled-Session-UUID", session_uuid),
        ("Content-Disposition", "linger"),
        ("Channel-Name", channel_name),
        ("Linger-Time", "-1" if linger_s is None else str(linger_s)),
        ("Content-Length", "0"),
    ]) + b"\n"


def rude_rejection() -> bytes:
    """Inbound connection refused by the ACL (followed by the disconnect notice)."""
    text = b"Access Denied, go away.\n"
    return b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n" % len(text) + text


# ----------------------------------------------------------------------------- parser

class ESLCommandError(Exception):
    """The client sent something mod_event_socket rejects. FreeSWITCH ends the connection
    (disconnect notice, close); ``rule`` names what broke, ``data`` shows the bytes."""

    def __init__(self, rule: str, data: bytes = b"") -> None:
        self.rule = rule
        self.data = data[:80]
        super().__init__(f"{rule} (near {self.data!r})")


@dataclass(frozen=True)
class Command:
    """One client packet: the command line, its ``name: value`` headers (raw, in order, as
    sent), an optional body, and the whole header block text (FS's ``Command`` header)."""

    line: str
    headers: tuple[Header, ...]
    body: bytes
    raw: str

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (first match), like ``switch_event_get_header``."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None


class CommandParser:
    """Incremental client-frame parser. Not thread-safe; one per connection.

    Contract: ``receive_data`` appends bytes (``b""`` is allowed and means nothing);
    ``next_command`` returns the next complete ``Command`` or ``None`` if more bytes are
    needed, and raises ``ESLCommandError`` on input FreeSWITCH would reject. After an error
    the parser is unusable (the connection ends).
    """

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES,
                 max_content_length: int = MAX_CONTENT_LENGTH) -> None:
        self._buf = bytearray()
        self._max_header = max_header_bytes
        self._max_body = max_content_length
        self._pending: tuple[str, tuple[Header, ...], str, int] | None = None
        self._broken: ESLCommandError | None = None
        self._scan = 0
        self._lfs = 0

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a command."""
        return len(self._buf)

    def next_command(self) -> Command | None:
        if self._broken is not None:
            raise self._broken
        try:
            return self._next()
        except ESLCommandError as e:
            self._broken = e
            raise

    def _next(self) -> Command | None:
        if self._pending is None:
            # skip leading blank lines (CR/LF before any command byte)
            skip = 0
            while skip < len(self._buf) and self._buf[skip] in (0x0A, 0x0D):
                skip += 1
            if skip:
                del self._buf[:skip]
                self._scan = max(0, self._scan - skip)
            end = self._header_end()
            if end is None:
                return None
            block = bytes(self._buf[:end])
            del self._buf[:end]
            self._pending = self._parse_block(block)
        line, headers, raw, clen = self._pending
        if len(self._buf) < clen:
            return None
        body = bytes(self._buf[:clen])
        del self._buf[:clen]
        self._pending = None
        return Command(line=line, headers=headers, body=body, raw=raw)

    def _header_end(self) -> int | None:
        """Index just past the header block's second consecutive LF (CRs don't count).
        Resumes where the previous call stopped, so byte-at-a-time input stays linear."""
        limit = min(len(self._buf), self._max_header + 1)
        for i in range(self._scan, limit):
            b = self._buf[i]
            if b == 0x0A:
                self._lfs += 1
                if self._lfs == 2:
                    self._scan = self._lfs = 0
                    return i + 1
            elif b != 0x0D:
                self._lfs = 0
        self._scan = limit
        if limit > self._max_header:
            raise ESLCommandError("header block too long", bytes(self._buf[:80]))
        return None

    def _parse_block(self, block: bytes) -> tuple[str, tuple[Header, ...], str, int]:
        text = block.decode("utf-8", "replace")
        lines = text.replace("\r", "").split("\n")
        line = lines[0]
        headers: list[Header] = []
        for ln in lines[1:]:
            if not ln:
                continue
            name, sep, value = ln.partition(":")
            if not sep or not name:
                continue            # FreeSWITCH ignores lines without "name:"
            headers.append((name, value.lstrip(" ")))
        clen = 0
        for k, v in headers:
            if k.lower() == "content-length":
                try:
                    clen = int(v.strip())
                except ValueError:
                    raise ESLCommandError("Content-Length is not a number", block) from None
                if clen < 0 or clen > self._max_body:
                    raise ESLCommandError("Content-Length out of range 0..16 MiB", block)
                break
        return line, tuple(headers), text, clen
