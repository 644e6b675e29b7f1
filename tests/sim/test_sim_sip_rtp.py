"""The test phone's wire codecs: SIP messages and SDP (``callctl.sim.sip``), RTP and RFC 4733
events (``callctl.sim.rtp``). Parsing real FreeSWITCH 1.10.12 messages, round trips, each
broken rule with its own error, and fuzz tests whose only outcomes are "parsed" or our own
error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callctl.sim import rtp, sip

# A 200 OK as FreeSWITCH 1.10.12's sofia profile sends it (headers abridged, order kept).
SDP_200 = (
    b"v=0\r\no=FreeSWITCH 1 2 IN IP4 127.0.0.1\r\ns=FreeSWITCH\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 16386 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:40001;rport=40001;branch=z9hG4bKabc\r\n"
    b"From: <sip:+15550001111@127.0.0.1:40001>;tag=a1b2\r\n"
    b"To: <sip:+15551230000@127.0.0.1:5080>;tag=Q2p7yXeB5H1UF\r\n"
    b"Call-ID: 1234@callctl-phone\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+15551230000@127.0.0.1:5080;transport=udp>\r\n"
    b"User-Agent: FreeSWITCH-mod_sofia/1.10.12-release~64bit\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP_200)
) + SDP_200
CL = b"Content-Length: %d" % len(SDP_200)
BYE = (b"BYE sip:+15550001111@127.0.0.1:40001 SIP/2.0\r\n"
       b"v: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bKx\r\n"
       b"f: <sip:+15551230000@127.0.0.1:5080>;tag=Q2p7yXeB5H1UF\r\n"
       b"t: <sip:+15550001111@127.0.0.1:40001>;tag=a1b2\r\n"
       b"i: 1234@callctl-phone\r\nCSeq: 9 BYE\r\n"
       b'Reason: Q.850;cause=16;text="NORMAL_CLEARING"\r\nl: 0\r\n\r\n')


def test_parses_a_freeswitch_200_with_sdp() -> None:
    m = sip.parse(OK_200)
    assert m.status == 200 and m.reason == "OK" and m.cseq == (1, "INVITE")
    assert sip.tag_of(m.header("TO") or "") == "Q2p7yXeB5H1UF"
    offer = sip.parse_sdp(m.body)
    assert (offer.host, offer.port) == ("127.0.0.1", 16386)
    assert offer.payloads == {0: "PCMU/8000", 101: "telephone-event/8000"}
    assert offer.pt_of("telephone-event") == 101 and offer.pt_of("PCMA") is None


def test_compact_headers_and_a_response_to_a_request() -> None:
    bye = sip.parse(BYE)
    assert bye.method == "BYE" and bye.header("call-id") == "1234@callctl-phone"
    assert bye.header("content-length") == "0"
    ok = sip.parse(sip.response_to(bye, 200, "OK", to_tag="zz").to_bytes())
    assert ok.status == 200 and ok.cseq == (9, "BYE")
    assert sip.tag_of(ok.header("to") or "") == "a1b2"            # had a tag already
    assert ok.all("via") == bye.all("via")


def test_round_trip_of_a_request_with_a_body() -> None:
    sdp = sip.build_sdp("127.0.0.1", 4000, 7, {0: "PCMU/8000", 101: "telephone-event/8000"})
    req = sip.request("INVITE", "sip:1@127.0.0.1:5080", [
        ("Via", "SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1"), ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:1@127.0.0.1>"), ("Call-ID", "c"), ("CSeq", "1 INVITE"),
        ("Content-Length", "999")], sdp)                         # rewritten on the wire
    back = sip.parse(req.to_bytes())
    assert back.body == sdp and back.header("content-length") == str(len(sdp))
    assert sip.parse_sdp(back.body).port == 4000


@pytest.mark.parametrize("data,rule", [
    (b"hello", "no blank line"),
    (b"HELLO WORLD\r\n\r\n", "neither a request nor a status line"),
    (b"SIP/2.0 200 OK\r\nVia x\r\n\r\n", "not 'Name: value'"),
    (b"SIP/2.0 200 OK\r\n foo\r\n\r\n", "continuation line before any header"),
    (OK_200.replace(CL, b"Content-Length: 999"), "shorter than"),
    (OK_200.replace(CL, b"Content-Length: x"), "not a number"),
    (OK_200.replace(b"CSeq: 1 INVITE", b"CSeq: one"), "CSeq is not"),
    (OK_200.replace(b"Call-ID: 1234@callctl-phone\r\n", b""), "missing call-id"),
    (OK_200.replace(b"From:", b"Fr\xffom:"), "not 'Name: value'"),
    (OK_200.replace(b"Contact: <", b"Contact: \xff<"), "not UTF-8"),
])
def test_each_broken_rule_is_our_error(data: bytes, rule: str) -> None:
    with pytest.raises(sip.SipParseError) as e:
        sip.parse(data)
    assert rule in e.value.rule and len(e.value.data) <= 80


def test_sdp_without_audio_is_our_error() -> None:
    with pytest.raises(sip.SipParseError, match="no audio stream"):
        sip.parse_sdp(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/AVP 96\r\n")


def test_rtp_round_trip_and_skipped_header_parts() -> None:
    p = rtp.RtpPacket(0, 65535, 2**32 - 160, 0xDEADBEEF, b"\xff" * 160, marker=True)
    assert rtp.parse(p.to_bytes()) == p
    # 1 CSRC, a 1-word extension and 3 bytes of padding around a 4-byte payload
    raw = (bytes([0x80 | 0x20 | 0x10 | 1, 8]) + b"\x00\x01" + b"\x00\x00\x00\xa0" +
           b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02" + b"\xbe\xde\x00\x01" + b"\x00" * 4 +
           b"abcd" + b"\x00\x00\x03")
    got = rtp.parse(raw)
    assert got.payload == b"abcd" and got.payload_type == 8


@pytest.mark.parametrize("data,rule", [
    (b"\x80\x00", "shorter than"),
    (b"\x40" + b"\x00" * 11, "version is not 2"),
    (b"\x80\xc8" + b"\x00" * 10, "RTCP"),
    (b"\x8f" + b"\x00" * 11, "CSRC list"),
    (b"\x90" + b"\x00" * 11, "extension cut short"),
    (b"\xa0" + b"\x00" * 11 + b"\x09", "padding"),
])
def test_each_broken_rtp_rule_is_our_error(data: bytes, rule: str) -> None:
    with pytest.raises(rtp.RtpParseError) as e:
        rtp.parse(data)
    assert rule in e.value.rule


def test_dtmf_event_payloads() -> None:
    assert rtp.dtmf_payload("9", 800, False) == bytes([9, 10, 0x03, 0x20])
    assert rtp.dtmf_payload("#", 800, True)[1] & 0x80
    with pytest.raises(ValueError):
        rtp.dtmf_payload("x", 1, False)


TOKENS = [b"\r\n", b"\r\n\r\n", b"SIP/2.0 200 OK", b"INVITE sip:a SIP/2.0", b"Via: x",
          b"CSeq: 1 INVITE", b"Call-ID: c", b"From: a", b"To: b", b"Content-Length: ",
          b"l: 5", b" ", b":", b"\xff", b"m=audio 1 RTP/AVP 0", b"c=IN IP4 1.2.3.4"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=30), st.sampled_from(TOKENS)), max_size=25))
def test_sip_fuzz_only_parses_or_raises_its_own_error(parts: list[bytes]) -> None:
    data = b"".join(parts)
    try:
        m = sip.parse(data)
    except sip.SipParseError as e:
        assert e.rule
        return
    assert (m.method is None) != (m.status is None)
    sip.parse(m.to_bytes())
    try:
        sip.parse_sdp(m.body)
    except sip.SipParseError as e:
        assert e.rule


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_rtp_fuzz_only_parses_or_raises_its_own_error(data: bytes) -> None:
    try:
        p = rtp.parse(data)
    except rtp.RtpParseError as e:
        assert e.rule
        return
    assert 0 <= p.payload_type < 128 and len(p.payload) <= len(data) - 12
