"""SIP messages and SDP for the test phone (``callctl.sim.phone``): bytes in, messages out.

How this works: over UDP one datagram carries one SIP message (RFC 3261 §18.1.1), so
``parse(datagram)`` turns a whole datagram into a frozen ``SipMessage`` or raises
``SipParseError`` (the peer's garbage: which rule broke and the offending bytes, truncated).
``SipMessage.to_bytes()`` writes one back with a correct ``Content-Length``. Header names are
matched case-insensitively and in their compact forms (``v`` = Via, ``f`` = From, …). The SDP
helpers read and write the one audio stream a phone needs. Nothing here does I/O.

This is the small part of SIP a test caller needs against a real FreeSWITCH on loopback (an
INVITE dialog with ACK, BYE, re-INVITE, OPTIONS), not a general SIP stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_DATAGRAM",
    "AudioOffer",
    "SipMessage",
    "SipParseError",
    "build_sdp",
    "parse",
    "parse_sdp",
    "request",
    "response_to",
    "tag_of",
]

MAX_DATAGRAM = 65_507
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l":
           "content-length", "c": "content-type", "k": "supported", "s": "subject"}
_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(rb"^SIP/2\.0 ([1-6]\d\d) ?(.*)$")
_TOKEN = re.compile(rb"^[!%'*+\-.0-9A-Z^_`a-z|~]+$")


class SipParseError(ValueError):
    """The peer sent bytes that are not a SIP message we accept: ``rule`` names what broke,
    ``data`` holds the offending bytes (at most 80)."""

    def __init__(self, rule: str, data: bytes = b"") -> None:
        self.rule = rule
        self.data = data[:80]
        super().__init__(f"{rule}: {self.data!r}" if data else rule)


def _canon(name: str) -> str:
    low = name.strip().lower()
    return COMPACT.get(low, low)


@dataclass(frozen=True)
class SipMessage:
    """One SIP request (``method`` set) or response (``status`` set). ``headers`` keep the
    wire order and spelling; ``header(name)`` finds the first by canonical name."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case, compact or long form), or None."""
        want = _canon(name)
        return next((v for k, v in self.headers if _canon(k) == want), None)

    def all(self, name: str) -> list[str]:
        """Every value of header ``name``, in order (Via, Record-Route …)."""
        want = _canon(name)
        return [v for k, v in self.headers if _canon(k) == want]

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; SipParseError if absent or malformed."""
        raw = self.header("cseq") or ""
        num, _, method = raw.strip().partition(" ")
        if not num.isdigit() or not method.strip():
            raise SipParseError("CSeq is not '<number> <method>'", raw.encode())
        return int(num), method.strip()

    def to_bytes(self) -> bytes:
        """The message on the wire; Content-Length is always written from the body."""
        if self.method is not None:
            first = f"{self.method} {self.uri} SIP/2.0"
        else:
            first = f"SIP/2.0 {self.status} {self.reason}"
        lines = [first] + [f"{k}: {v}" for k, v in self.headers
                           if _canon(k) != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> SipMessage:
    """One datagram → one message. Raises SipParseError for anything else."""
    if len(data) > MAX_DATAGRAM:
        raise SipParseError("datagram larger than UDP allows", data)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no blank line after the headers", data)
    lines = head.split(b"\r\n")
    first = lines[0]
    msg: dict[str, object] = {}
    if m := _REQUEST_LINE.match(first):
        msg = {"method": m[1].decode(), "uri": _text(m[2], first)}
    elif m := _STATUS_LINE.match(first):
        msg = {"status": int(m[1]), "reason": _text(m[2], first)}
    else:
        raise SipParseError("first line is neither a request nor a status line", first)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):                       # folded continuation (RFC 3261 7.3.1)
            if not headers:
                raise SipParseError("continuation line before any header", line)
            k, v = headers[-1]
            headers[-1] = (k, f"{v} {_text(line.strip(), line)}")
            continue
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipParseError("header line is not 'Name: value'", line)
        headers.append((_text(name.strip(), line), _text(value.strip(), line)))
    length = next((v for k, v in headers if _canon(k) == "content-length"), None)
    if length is not None:
        if not length.isdigit():
            raise SipParseError("Content-Length is not a number", length.encode())
        if int(length) > len(body):
            raise SipParseError("body shorter than Content-Length", body)
        body = body[:int(length)]
    result = SipMessage(headers=tuple(headers), body=body, **msg)  # type: ignore[arg-type]
    for need in ("via", "call-id", "cseq", "from", "to"):
        if result.header(need) is None:
            raise SipParseError(f"missing {need} header", first)
    result.cseq  # noqa: B018  (validates)
    return result


def _text(raw: bytes, where: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("not UTF-8", where) from None


def tag_of(name_addr: str) -> str | None:
    """The ``tag`` parameter of a From/To value, or None."""
    m = re.search(r";\s*tag=([^;>\s]+)", name_addr)
    return m[1] if m else None


def request(method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b""
            ) -> SipMessage:
    """A request with ``headers`` in order (Content-Length is added on the wire)."""
    return SipMessage(method=method, uri=uri, headers=tuple(headers), body=body)


def response_to(req: SipMessage, status: int, reason: str, to_tag: str | None = None,
                extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> SipMessage:
    """A response copying Via, From, To (adding ``to_tag`` if it has none), Call-ID, CSeq."""
    headers: list[tuple[str, str]] = [("Via", v) for v in req.all("via")]
    to = req.header("to") or ""
    if to_tag and tag_of(to) is None:
        to = f"{to};tag={to_tag}"
    headers += [("From", req.header("from") or ""), ("To", to),
                ("Call-ID", req.header("call-id") or ""), ("CSeq", req.header("cseq") or "")]
    headers += extra or []
    return SipMessage(status=status, reason=reason, headers=tuple(headers), body=body)


# -- SDP ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioOffer:
    """The audio stream of an SDP body: where to send RTP and the payload types by name."""

    host: str
    port: int
    payloads: dict[int, str] = field(default_factory=dict)   # 0 -> "PCMU/8000"

    def pt_of(self, encoding: str) -> int | None:
        """The payload type whose rtpmap starts with ``encoding`` (``telephone-event``)."""
        return next((pt for pt, name in self.payloads.items()
                     if name.lower().startswith(encoding.lower() + "/")), None)


STATIC_PT = {0: "PCMU/8000", 8: "PCMA/8000", 9: "G722/8000"}


def parse_sdp(body: bytes) -> AudioOffer:
    """The first audio stream of ``body``. Raises SipParseError if there is none."""
    host = port = None
    pts: list[int] = []
    names: dict[int, str] = {}
    media_host = None
    in_audio = False
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("c=IN IP4 "):
            if in_audio:
                media_host = line[9:].split("/")[0]
            elif host is None:
                host = line[9:].split("/")[0]
        elif line.startswith("m="):
            if in_audio:
                break
            parts = line[2:].split()
            if parts and parts[0] == "audio" and len(parts) >= 4 and parts[1].isdigit():
                in_audio, port = True, int(parts[1])
                pts = [int(p) for p in parts[3:] if p.isdigit()]
        elif in_audio and line.startswith("a=rtpmap:"):
            num, _, name = line[9:].partition(" ")
            if num.isdigit():
                names[int(num)] = name.strip()
    host = media_host or host
    if port is None or host is None or not pts:
        raise SipParseError("SDP has no audio stream with an address", body)
    return AudioOffer(host, port, {pt: names.get(pt, STATIC_PT.get(pt, "?")) for pt in pts})


def build_sdp(host: str, port: int, session_id: int, payloads: dict[int, str]) -> bytes:
    """An SDP offer/answer with one sendrecv audio stream carrying ``payloads``."""
    lines = ["v=0", f"o=callctl-phone {session_id} {session_id} IN IP4 {host}", "s=callctl",
             f"c=IN IP4 {host}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt in payloads)}"]
    for pt, name in payloads.items():
        lines.append(f"a=rtpmap:{pt} {name}")
        if name.startswith("telephone-event"):
            lines.append(f"a=fmtp:{pt} 0-16")
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()
