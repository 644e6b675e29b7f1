"""RTP packets (RFC 3550) and DTMF telephone-events (RFC 4733) for the test phone: bytes in,
packets out. Nothing here does I/O.

``parse(datagram)`` returns a frozen ``RtpPacket`` or raises ``RtpParseError`` (the peer's
garbage, with the rule and the offending bytes). CSRC lists, the header extension and padding
are understood and skipped; the payload is what the codec gets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["DTMF_EVENTS", "RtpPacket", "RtpParseError", "dtmf_payload", "parse"]

DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14,
               "D": 15}
_HEADER = struct.Struct("!BBHII")


class RtpParseError(ValueError):
    """Not an RTP packet we accept: ``rule`` names what broke, ``data`` the first bytes."""

    def __init__(self, rule: str, data: bytes = b"") -> None:
        self.rule = rule
        self.data = data[:32]
        super().__init__(f"{rule}: {self.data!r}")


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def to_bytes(self) -> bytes:
        """Version 2, no padding, no extension, no CSRC."""
        return _HEADER.pack(0x80, (0x80 if self.marker else 0) | (self.payload_type & 0x7F),
                            self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                            self.ssrc & 0xFFFFFFFF) + self.payload


def parse(data: bytes) -> RtpPacket:
    """One datagram → one packet. Raises RtpParseError for anything else (RTCP included)."""
    if len(data) < _HEADER.size:
        raise RtpParseError("shorter than the 12-byte RTP header", data)
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RtpParseError("RTP version is not 2", data)
    if 72 <= (b1 & 0x7F) <= 76:
        raise RtpParseError("payload type of RTCP (a packet for the control port)", data)
    off = _HEADER.size + 4 * (b0 & 0x0F)
    if b0 & 0x10:                                        # header extension
        if len(data) < off + 4:
            raise RtpParseError("header extension cut short", data)
        (words,) = struct.unpack_from("!H", data, off + 2)
        off += 4 + 4 * words
    end = len(data)
    if b0 & 0x20:                                        # padding: last byte counts it
        if end == 0 or data[-1] == 0 or data[-1] > end - off:
            raise RtpParseError("padding longer than the payload", data)
        end -= data[-1]
    if off > end:
        raise RtpParseError("CSRC list or extension longer than the packet", data)
    return RtpPacket(b1 & 0x7F, seq, ts, ssrc, data[off:end], bool(b1 & 0x80))


def dtmf_payload(digit: str, duration: int, end: bool, volume: int = 10) -> bytes:
    """The 4-byte RFC 4733 event payload for ``digit`` lasting ``duration`` timestamp units.
    Raises ValueError for a digit that is not 0-9, *, #, A-D."""
    event = DTMF_EVENTS.get(digit.upper())
    if event is None:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F),
                       min(duration, 0xFFFF))
