"""A SIP phone on loopback that places calls into a real FreeSWITCH and measures them from the
caller's side of the wire: the scripted callers of ``callctl.sim.callers`` run on it unchanged.

How this works: ``Phone(switch_host, switch_port).call(did, caller_number)`` sends an INVITE
(PCMU or PCMA, telephone-event) from its own UDP socket and returns a ``PhoneCall``, which
has what ``callers.SimCallLike`` asks for (``media.say``, ``dtmf``, ``hangup``,
``wait_answered``, ``heard``). Three greenlets run per call: the SIP reader (ACKs each 2xx,
answers BYE, re-INVITE and OPTIONS), the RTP sender and the RTP receiver. The sender keeps a
20 ms clock from the answer on: each tick sends the next frame of queued speech, a DTMF event
packet (RFC 4733), or silence, as a phone does. What the caller hears is cut from the received
RTP by energy: a frame louder than ``VOICED_RMS`` is audible (FreeSWITCH's comfort noise,
``send_silence_when_idle=400``, is far below it), and audible frames less than ``JOIN_GAP_S``
apart are one ``Heard`` stretch, timed by arrival (``time.monotonic()``, the clock the daemon
stamps its turns with). The caller's own speech is cut the same way from the frames it sent; a
stretch of bot audio that ends while the caller is talking over it is ``interrupted``.

The caller cannot tell a paused reply that continued from a cut followed by a new reply, so
``paused`` is never set here. All received audio is kept (bounded, ``MAX_RECORD_S``) so a test
can look at what the caller heard (``received()``). Nothing is sent off loopback.
"""

from __future__ import annotations

import itertools
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.socket
import numpy as np
import numpy.typing as npt

from callctl.log import get_logger
from callctl.sim import g711, rtp, sip
from callctl.sim.interfaces import Heard

__all__ = ["JOIN_GAP_S", "VOICED_RMS", "Phone", "PhoneCall", "PhoneError", "Stretch"]

FRAME_S = 0.02
FRAME_SAMPLES = 160
VOICED_RMS = 200.0           # int16 RMS of a 20 ms frame above which it counts as audible
JOIN_GAP_S = 0.4             # audible frames closer than this are one stretch (Piper's commas)
CUT_GRACE_S = 0.15           # a stretch ending this soon after the caller stopped was cut
MAX_RECORD_S = 600.0         # received audio kept per call
MAX_QUEUE_S = 600.0          # caller speech queued per call
SILENCE = {"PCMU": b"\xff" * FRAME_SAMPLES, "PCMA": b"\xd5" * FRAME_SAMPLES}
PT = {"PCMU": 0, "PCMA": 8}
DTMF_PT = 101
DTMF_FRAMES = 5              # 100 ms per key press, then three end packets


class PhoneError(RuntimeError):
    """The phone cannot do what was asked (call not up, speech queue full)."""


@dataclass
class Stretch:
    start: float
    end: float


def _track(stretches: list[Stretch], t: float, voiced: bool) -> None:
    if not voiced:
        return
    if stretches and t - stretches[-1].end <= JOIN_GAP_S:
        stretches[-1].end = t + FRAME_S
    else:
        stretches.append(Stretch(t, t + FRAME_S))


def _rms(samples: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


class Phone:
    """Places calls into the SIP profile at ``switch_host:switch_port`` from ``host``."""

    def __init__(self, switch_host: str, switch_port: int, host: str = "127.0.0.1",
                 codec: str = "PCMU") -> None:
        if codec not in PT:
            raise ValueError(f"codec must be PCMU or PCMA, not {codec!r}")
        self.switch = (switch_host, switch_port)
        self.host = host
        self.codec = codec

    def call(self, did: str, caller: str, timeout_s: float = 10.0) -> PhoneCall:
        """Send the INVITE and return the call at once (``wait_answered`` to wait)."""
        c = PhoneCall(self, did, caller, timeout_s)
        c.start()
        return c


class PhoneCall:
    """One call placed by ``Phone``; see the module doc."""

    frame_s = FRAME_S
    speed = 1.0

    def __init__(self, phone: Phone, did: str, caller: str, timeout_s: float) -> None:
        self.phone = phone
        self.did = did
        self.caller = caller
        self.codec = phone.codec
        self.timeout_s = timeout_s
        self.uuid: str | None = None          # the switch's channel uuid, if a test looks it up
        self.call_id = f"{secrets.token_hex(8)}@callctl-phone"
        self.tag = secrets.token_hex(4)
        self.remote_tag: str | None = None
        self.remote_target: str | None = None
        self.route: list[str] = []
        self.cseq = itertools.count(1)
        self.invite: sip.SipMessage | None = None
        self.answered = gevent.event.Event()
        self.ended = gevent.event.Event()
        self.final_status: int | None = None
        self.hangup_cause: str | None = None
        self.hangup_by: str | None = None       # "caller" or "switch"
        self.protocol_errors = 0
        self.log = get_logger(component="phone", call_id=self.call_id)
        self._sip = gevent.socket.socket(gevent.socket.AF_INET, gevent.socket.SOCK_DGRAM)
        self._sip.bind((phone.host, 0))
        self._rtp = gevent.socket.socket(gevent.socket.AF_INET, gevent.socket.SOCK_DGRAM)
        self._rtp.bind((phone.host, 0))
        self.sip_port = self._sip.getsockname()[1]
        self.rtp_port = self._rtp.getsockname()[1]
        self._remote_media: tuple[str, int] | None = None
        self._dtmf_pt = DTMF_PT
        self._queue: deque[npt.NDArray[np.int16]] = deque()
        self._dtmf: deque[str] = deque()
        self._next_tick: float | None = None
        self._heard: list[Stretch] = []
        self._spoken: list[Stretch] = []
        self._received: deque[tuple[float, bytes]] = deque(maxlen=int(MAX_RECORD_S / FRAME_S))
        self._bye_done = gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []

    # -- SimCallLike -------------------------------------------------------------------
    @property
    def media(self) -> PhoneCall:
        return self

    def wait_answered(self, timeout: float) -> bool:
        """True once the switch answered (200 OK); False on timeout or a failed call."""
        gevent.wait([self.answered, self.ended], timeout=timeout, count=1)
        return self.answered.is_set() and not (self.ended.is_set() and
                                               self.final_status not in (None, 200))

    def wait_hangup(self, timeout: float) -> str | None:
        """The hangup cause once the call ended, None on timeout."""
        return self.hangup_cause if self.ended.wait(timeout) else None

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """BYE (or CANCEL before the answer); waits up to 2 s for the switch's 200."""
        if self.ended.is_set():
            return
        if not self.answered.is_set():
            assert self.invite is not None
            self._send(self._cancel())
        else:
            self._send(self._in_dialog("BYE", [("Reason",
                                                f'Q.850;cause=16;text="{cause}"')]))
        self.hangup_cause, self.hangup_by = cause, "caller"
        self._bye_done.wait(2.0)
        self._end()

    def dtmf(self, digit: str) -> None:
        """Press ``digit`` (RFC 4733 events on the media clock)."""
        rtp.dtmf_payload(digit, 0, False)        # validates
        if not self.answered.is_set() or self.ended.is_set():
            raise PhoneError("call is not up")
        self._dtmf.append(digit)

    def say(self, samples_8k: npt.ArrayLike) -> tuple[float, float]:
        """Queue caller speech (int16, 8000 Hz) behind what is queued; returns the monotonic
        times its first frame is sent and its last sample ends. PhoneError if the call is
        not up or more than ``MAX_QUEUE_S`` would be queued."""
        x = np.asarray(samples_8k)
        if x.dtype != np.int16 or x.ndim != 1:
            raise PhoneError("say() takes a 1-D int16 array at 8000 Hz")
        if self._next_tick is None or self.ended.is_set():
            raise PhoneError("call is not up")
        frames = -(-len(x) // FRAME_SAMPLES)
        if (len(self._queue) + frames) * FRAME_S > MAX_QUEUE_S:
            raise PhoneError("caller speech queue is full")
        start = self._next_tick + len(self._queue) * FRAME_S
        padded = np.zeros(frames * FRAME_SAMPLES, np.int16)
        padded[:len(x)] = x
        self._queue.extend(padded.reshape(frames, FRAME_SAMPLES))
        return start, start + len(x) / 8000

    def caller_queued_s(self) -> float:
        return len(self._queue) * FRAME_S

    def heard(self) -> list[Heard]:
        """What the caller heard so far, as stretches of audible bot audio (module doc)."""
        out = []
        for h in list(self._heard):
            cut = any(s.start > h.start and s.start <= h.end <= s.end + CUT_GRACE_S
                      for s in self._spoken)
            out.append(Heard(h.start, h.end, "rtp", cut))
        return out

    def spoken(self) -> list[Stretch]:
        """Stretches of the caller's own audible speech, as sent."""
        return [Stretch(s.start, s.end) for s in self._spoken]

    def received(self) -> tuple[float | None, npt.NDArray[np.int16]]:
        """(arrival time of the first kept packet, the decoded audio heard, int16 8 kHz,
        packets laid end to end)."""
        pkts = list(self._received)
        if not pkts:
            return None, np.zeros(0, np.int16)
        codes = np.frombuffer(b"".join(p for _, p in pkts), np.uint8)
        return pkts[0][0], g711.decode(codes, self.codec)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._sip_loop), gevent.spawn(self._rtp_rx)]
        self.invite = self._make_invite()
        self._send(self.invite)
        self._greenlets.append(gevent.spawn(self._answer_deadline))

    def _answer_deadline(self) -> None:
        if not gevent.wait([self.answered, self.ended], timeout=self.timeout_s, count=1):
            self.log.warning("phone.no_answer", timeout_s=self.timeout_s)
            self.hangup("NO_ANSWER")

    def _end(self) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        me = gevent.getcurrent()
        for g in self._greenlets:
            if g is not me:
                g.kill(block=False)
        gevent.spawn_later(0.5, self._close)

    def _close(self) -> None:
        self._sip.close()
        self._rtp.close()

    # -- SIP ---------------------------------------------------------------------------
    def _uri(self) -> str:
        return f"sip:{self.did}@{self.phone.switch[0]}:{self.phone.switch[1]}"

    def _via(self) -> tuple[str, str]:
        return ("Via", f"SIP/2.0/UDP {self.phone.host}:{self.sip_port};rport;"
                       f"branch=z9hG4bK{secrets.token_hex(8)}")

    def _from(self) -> str:
        return f"<sip:{self.caller}@{self.phone.host}:{self.sip_port}>;tag={self.tag}"

    def _sdp(self) -> bytes:
        return sip.build_sdp(self.phone.host, self.rtp_port, random.randrange(1, 2**31),
                             {PT[self.codec]: f"{self.codec}/8000",
                              DTMF_PT: "telephone-event/8000"})

    def _make_invite(self) -> sip.SipMessage:
        return sip.request("INVITE", self._uri(), [
            self._via(), ("Max-Forwards", "70"), ("From", self._from()),
            ("To", f"<{self._uri()}>"), ("Call-ID", self.call_id),
            ("CSeq", f"{next(self.cseq)} INVITE"),
            ("Contact", f"<sip:{self.caller}@{self.phone.host}:{self.sip_port}>"),
            ("User-Agent", "callctl-phone"), ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),
            ("Content-Type", "application/sdp")], self._sdp())

    def _cancel(self) -> sip.SipMessage:
        assert self.invite is not None
        num, _ = self.invite.cseq
        return sip.request("CANCEL", self.invite.uri or self._uri(), [
            ("Via", self.invite.header("via") or ""), ("Max-Forwards", "70"),
            ("From", self._from()), ("To", self.invite.header("to") or ""),
            ("Call-ID", self.call_id), ("CSeq", f"{num} CANCEL")])

    def _in_dialog(self, method: str, extra: list[tuple[str, str]] | None = None,
                   cseq: int | None = None) -> sip.SipMessage:
        to = f"<{self._uri()}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        headers = [self._via(), ("Max-Forwards", "70"), ("From", self._from()), ("To", to),
                   ("Call-ID", self.call_id),
                   ("CSeq", f"{cseq if cseq is not None else next(self.cseq)} {method}")]
        headers += [("Route", r) for r in self.route]
        return sip.request(method, self.remote_target or self._uri(), headers + (extra or []))

    def _send(self, msg: sip.SipMessage) -> None:
        try:
            self._sip.sendto(msg.to_bytes(), self.phone.switch)
        except OSError as exc:
            self.log.warning("phone.send_failed", error=str(exc))

    def _sip_loop(self) -> None:
        while True:
            try:
                data, _ = self._sip.recvfrom(sip.MAX_DATAGRAM)
            except OSError:
                return
            try:
                msg = sip.parse(data)
            except sip.SipParseError as exc:
                self.protocol_errors += 1
                self.log.warning("phone.sip_garbage", rule=exc.rule, data=repr(exc.data))
                continue
            if msg.status is not None:
                self._on_response(msg)
            else:
                self._on_request(msg)

    def _on_response(self, msg: sip.SipMessage) -> None:
        num, method = msg.cseq
        status = msg.status or 0
        if method == "INVITE" and status >= 200:
            if 200 <= status < 300:
                self._ack_2xx(msg, num)
                if not self.answered.is_set():
                    self.final_status = status
                    self._on_answer(msg)
            else:
                self._ack_failure(msg, num)
                self.final_status = status
                if self.hangup_cause is None:
                    self.hangup_cause, self.hangup_by = f"SIP_{status}", "switch"
                self._end()
        elif method == "INVITE" and msg.body and self._remote_media is None:
            self._set_remote_media(msg.body)                # early media (183)
        elif method in ("BYE", "CANCEL") and status >= 200:
            self._bye_done.set()

    def _on_answer(self, msg: sip.SipMessage) -> None:
        self.remote_tag = sip.tag_of(msg.header("to") or "")
        contact = msg.header("contact") or ""
        self.remote_target = contact.strip().lstrip("<").split(">")[0] or None
        self.route = list(reversed(msg.all("record-route")))
        if msg.body:
            self._set_remote_media(msg.body)
        self._next_tick = time.monotonic() + FRAME_S
        self._greenlets.append(gevent.spawn(self._rtp_tx))
        self.answered.set()

    def _ack_2xx(self, msg: sip.SipMessage, num: int) -> None:
        tag = sip.tag_of(msg.header("to") or "")
        if self.remote_tag is None:
            self.remote_tag = tag
        contact = (msg.header("contact") or "").strip().lstrip("<").split(">")[0]
        self.remote_target = self.remote_target or contact or None
        self._send(self._in_dialog("ACK", cseq=num))

    def _ack_failure(self, msg: sip.SipMessage, num: int) -> None:
        assert self.invite is not None
        self._send(sip.request("ACK", self.invite.uri or self._uri(), [
            ("Via", self.invite.header("via") or ""), ("Max-Forwards", "70"),
            ("From", self._from()), ("To", msg.header("to") or ""), ("Call-ID", self.call_id),
            ("CSeq", f"{num} ACK")]))

    def _on_request(self, msg: sip.SipMessage) -> None:
        if msg.method == "ACK":
            return
        if msg.method == "BYE":
            self._send(sip.response_to(msg, 200, "OK"))
            reason = msg.header("reason") or ""
            text = reason.split('text="')[-1].rstrip('"') if 'text="' in reason else ""
            if self.hangup_cause is None:
                self.hangup_cause, self.hangup_by = text or "NORMAL_CLEARING", "switch"
            self._end()
        elif msg.method == "INVITE":                       # re-INVITE: accept its media
            if msg.body:
                self._set_remote_media(msg.body)
            self._send(sip.response_to(msg, 200, "OK", self.tag, [
                ("Contact", f"<sip:{self.caller}@{self.phone.host}:{self.sip_port}>"),
                ("Content-Type", "application/sdp")], self._sdp()))
        else:                                              # OPTIONS, INFO, UPDATE, NOTIFY
            self._send(sip.response_to(msg, 200, "OK", self.tag))

    def _set_remote_media(self, body: bytes) -> None:
        try:
            offer = sip.parse_sdp(body)
        except sip.SipParseError as exc:
            self.protocol_errors += 1
            self.log.warning("phone.sdp_garbage", rule=exc.rule)
            return
        self._remote_media = (offer.host, offer.port)
        self._dtmf_pt = offer.pt_of("telephone-event") or DTMF_PT

    # -- RTP ---------------------------------------------------------------------------
    def _rtp_tx(self) -> None:
        seq, ts, ssrc = random.randrange(2**16), random.randrange(2**32), random.getrandbits(32)
        pt, silence = PT[self.codec], SILENCE[self.codec]
        assert self._next_tick is not None
        pending: deque[list[bytes]] = deque()      # DTMF event packets, one list per tick
        while not self.ended.is_set():
            gevent.sleep(max(0.0, self._next_tick - time.monotonic()))
            t = self._next_tick
            self._next_tick = t + FRAME_S
            dest = self._remote_media
            if not pending and self._dtmf:
                pending.extend(self._dtmf_packets(self._dtmf.popleft(), seq, ts, ssrc))
                seq += sum(len(p) for p in pending)
                ts += DTMF_FRAMES * FRAME_SAMPLES
            if pending:
                for pkt in pending.popleft():
                    if dest:
                        self._rtp_send(pkt, dest)
                continue
            if self._queue:
                frame = self._queue.popleft()
                payload = g711.encode(frame, self.codec).tobytes()
                _track(self._spoken, t, _rms(frame) > VOICED_RMS)
            else:
                payload = silence
            if dest:
                self._rtp_send(rtp.RtpPacket(pt, seq, ts, ssrc, payload).to_bytes(), dest)
            seq, ts = seq + 1, ts + FRAME_SAMPLES

    def _dtmf_packets(self, digit: str, seq: int, ts: int, ssrc: int) -> list[list[bytes]]:
        """A key press as RFC 4733 event packets for DTMF_FRAMES ticks (one per tick, the
        last tick three end packets), all with the event's start timestamp ``ts``."""
        out: list[list[bytes]] = []
        n_sent = 0
        for n in range(1, DTMF_FRAMES + 1):
            end = n == DTMF_FRAMES
            payload = rtp.dtmf_payload(digit, n * FRAME_SAMPLES, end)
            tick = []
            for _ in range(3 if end else 1):
                tick.append(rtp.RtpPacket(self._dtmf_pt, seq + n_sent, ts, ssrc, payload,
                                          marker=n == 1).to_bytes())
                n_sent += 1
            out.append(tick)
        return out

    def _rtp_send(self, data: bytes, dest: tuple[str, int]) -> None:
        try:
            self._rtp.sendto(data, dest)
        except OSError as exc:
            self.log.warning("phone.rtp_send_failed", error=str(exc))

    def _rtp_rx(self) -> None:
        pt = PT[self.codec]
        while True:
            try:
                data, _ = self._rtp.recvfrom(2048)
            except OSError:
                return
            t = time.monotonic()
            try:
                pkt = rtp.parse(data)
            except rtp.RtpParseError:
                self.protocol_errors += 1
                continue
            if pkt.payload_type != pt:
                continue
            self._received.append((t, pkt.payload))
            samples = g711.decode(np.frombuffer(pkt.payload, np.uint8), self.codec)
            _track(self._heard, t, _rms(samples) > VOICED_RMS)


def find_uuid(channels: list[dict[str, Any]], caller: str) -> str | None:
    """The uuid of the channel whose caller id number is ``caller`` in the rows of
    ``show channels as json`` (None if there is none)."""
    return next((row.get("uuid") for row in channels if row.get("cid_num") == caller), None)
