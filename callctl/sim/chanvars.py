"""Channel data templates of the emulated switch: the caller profile and channel variables a
FreeSWITCH 1.10.12 inbound SIP leg carries (names and order taken from the captures'
CHANNEL_CREATE / CHANNEL_ANSWER / CHANNEL_HANGUP_COMPLETE), with values made up for the
emulated caller. Pure functions, no I/O.
"""

from __future__ import annotations

import random
import time

from callctl.sim.events import HANGUP_CAUSES

Pairs = list[tuple[str, str]]


def initial_profile(u: str, c: str, did: str, name: str, created_us: int) -> dict[str, str]:
    """Caller profile fields (without the ``Caller-`` prefix) of a new inbound call."""
    created = str(created_us)
    return {
        "Direction": "inbound", "Logical-Direction": "inbound", "Username": c,
        "Dialplan": "XML", "Caller-ID-Name": c, "Caller-ID-Number": c,
        "Orig-Caller-ID-Name": c, "Orig-Caller-ID-Number": c,
        "Network-Addr": "127.0.0.1", "ANI": c, "Destination-Number": did, "Unique-ID": u,
        "Source": "mod_sofia", "Context": "public", "Channel-Name": name,
        "Profile-Index": "1", "Profile-Created-Time": created,
        "Channel-Created-Time": created, "Channel-Answered-Time": "0",
        "Channel-Progress-Time": "0", "Channel-Progress-Media-Time": "0",
        "Channel-Hangup-Time": "0", "Channel-Transfer-Time": "0",
        "Channel-Resurrect-Time": "0", "Channel-Bridged-Time": "0",
        "Channel-Last-Hold": "0", "Channel-Hold-Accum": "0", "Screen-Bit": "true",
        "Privacy-Hide-Name": "false", "Privacy-Hide-Number": "false",
    }


def initial_variables(u: str, c: str, did: str, name: str, created_us: int, session_id: int,
                      codec: str, rate: int, pt: int) -> Pairs:
    """The 68 variables of CHANNEL_CREATE, in FreeSWITCH's order."""
    created = str(created_us)
    tag = f"{random.randrange(10**6)}SIPpTag001"
    call_id = f"{random.randrange(10**6)}-sim@127.0.0.1"
    sdp = (f"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
           f"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16600 RTP/AVP {pt}\r\n"
           f"a=rtpmap:{pt} {codec}/{rate}\r\n")
    return [
        ("direction", "inbound"), ("uuid", u), ("call_uuid", u),
        ("session_id", str(session_id)), ("sip_from_user", c),
        ("sip_from_port", "5070"), ("sip_from_uri", f"{c}@127.0.0.1:5070"),
        ("sip_from_host", "127.0.0.1"), ("video_media_flow", "disabled"),
        ("text_media_flow", "disabled"), ("channel_name", name),
        ("sip_call_id", call_id), ("sip_local_network_addr", "127.0.0.1"),
        ("sip_network_ip", "127.0.0.1"), ("sip_network_port", "5070"),
        ("sip_invite_stamp", created), ("sip_received_ip", "127.0.0.1"),
        ("sip_received_port", "5070"), ("sip_via_protocol", "udp"),
        ("sip_from_user_stripped", c), ("sip_from_tag", tag),
        ("sofia_profile_name", "external"),
        ("sofia_profile_url", "sip:mod_sofia@127.0.0.1:5080"),
        ("recovery_profile_name", "external"),
        ("sip_full_via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-sim-1-0"),
        ("sip_from_display", c),
        ("sip_full_from", f'"{c}" <sip:{c}@127.0.0.1:5070>;tag={tag}'),
        ("sip_full_to", f"<sip:{did}@127.0.0.1:5080>"), ("sip_req_user", did),
        ("sip_req_port", "5080"), ("sip_req_uri", f"{did}@127.0.0.1:5080"),
        ("sip_req_host", "127.0.0.1"), ("sip_to_user", did), ("sip_to_port", "5080"),
        ("sip_to_uri", f"{did}@127.0.0.1:5080"), ("sip_to_host", "127.0.0.1"),
        ("sip_contact_user", c), ("sip_contact_port", "5070"),
        ("sip_contact_uri", f"{c}@127.0.0.1:5070"), ("sip_contact_host", "127.0.0.1"),
        ("sip_subject", "callctl sim"), ("sip_user_agent", "callctl-sim"),
        ("sip_via_host", "127.0.0.1"), ("sip_via_port", "5070"), ("max_forwards", "70"),
        ("switch_r_sdp", sdp),
        ("ep_codec_string", f"CORE_PCM_MODULE.{codec}@{rate}h@20i@64000b"),
        ("rtp_use_codec_string", "PCMU,PCMA"), ("remote_video_media_flow", "inactive"),
        ("remote_text_media_flow", "inactive"), ("remote_audio_media_flow", "sendrecv"),
        ("audio_media_flow", "sendrecv"), ("remote_media_ip", "127.0.0.1"),
        ("remote_media_port", "16600"), ("rtp_audio_recv_pt", str(pt)),
        ("rtp_use_codec_name", codec), ("rtp_use_codec_rate", str(rate)),
        ("rtp_use_codec_ptime", "20"), ("rtp_use_codec_channels", "1"),
        ("rtp_last_audio_codec_string", f"{codec}@{rate}h@20i@1c"),
        ("read_codec", codec), ("original_read_codec", codec), ("read_rate", str(rate)),
        ("original_read_rate", str(rate)), ("write_codec", codec),
        ("write_rate", str(rate)), ("dtmf_type", "rfc2833"),
        ("endpoint_disposition", "RECEIVED"),
    ]


def answer_variables(pt: int) -> Pairs:
    """Variables sofia sets when the call is answered (local media, RTP payloads)."""
    return [("rtp_local_sdp_str", "v=0\r\no=FreeSWITCH 1 2 IN IP4 127.0.0.1\r\n"),
            ("local_media_ip", "127.0.0.1"), ("local_media_port", "16458"),
            ("advertised_media_ip", "127.0.0.1"), ("rtp_use_pt", str(pt)),
            ("rtp_use_ssrc", str(random.randrange(1, 2**32))),
            ("rtp_2833_send_payload", "101"), ("rtp_2833_recv_payload", "101"),
            ("remote_media_ip", "127.0.0.1"), ("remote_media_port", "16600")]


def bye_dialog_variables(current: dict[str, str], did: str) -> Pairs:
    """Dialog variables sofia sets again when the caller's BYE arrives (they move to the end
    of the variable list, before ``sip_term_status``)."""
    to_tag = current.get("sip_to_tag") or f"sim{random.randrange(10**9)}"
    return [("sip_to_tag", to_tag), ("sip_from_tag", current.get("sip_from_tag", "")),
            ("sip_cseq", "2"), ("sip_call_id", current.get("sip_call_id", "")),
            ("sip_full_via", current.get("sip_full_via", "")),
            ("sip_from_display", current.get("sip_from_display", "")),
            ("sip_full_from", current.get("sip_full_from", "")),
            ("sip_full_to", f"<sip:{did}@127.0.0.1:5080>;tag={to_tag}")]


def cdr_variables(cause: str, start: int, ans: int, end_us: int, last_app: str, last_arg: str,
                  caller_id: str, rate: int) -> Pairs:
    """CDR variables set in CS_REPORTING (times in µs since the epoch; ``ans`` 0 = never)."""
    bill_us = end_us - ans if ans else 0
    dur_us = end_us - start
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start / 1e6))
    cdr = [("hangup_cause", cause), ("hangup_cause_q850", str(HANGUP_CAUSES[cause])),
           ("digits_dialed", "none"), ("start_stamp", stamp),
           ("profile_start_stamp", stamp)]
    if ans:
        cdr.append(("answer_stamp",
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ans / 1e6))))
    cdr += [("end_stamp", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(end_us / 1e6))),
            ("start_epoch", str(start // 10**6)), ("start_uepoch", str(start)),
            ("profile_start_epoch", str(start // 10**6)),
            ("profile_start_uepoch", str(start)),
            ("answer_epoch", str(ans // 10**6)), ("answer_uepoch", str(ans))]
    cdr += [(k, "0") for k in (
        "bridge_epoch", "bridge_uepoch", "last_hold_epoch", "last_hold_uepoch",
        "hold_accum_seconds", "hold_accum_usec", "hold_accum_ms", "resurrect_epoch",
        "resurrect_uepoch", "progress_epoch", "progress_uepoch", "progress_media_epoch",
        "progress_media_uepoch")]
    cdr += [("end_epoch", str(end_us // 10**6)), ("end_uepoch", str(end_us)),
            ("last_app", last_app), ("last_arg", last_arg),
            ("caller_id", f'"{caller_id}" <{caller_id}>'),
            ("duration", str(dur_us // 10**6)), ("billsec", str(bill_us // 10**6)),
            ("progresssec", "0"), ("answersec", str((ans - start) // 10**6 if ans else 0)),
            ("waitsec", "0"), ("progress_mediasec", "0"),
            ("flow_billsec", str(dur_us // 10**6)),
            ("mduration", str(dur_us // 1000)), ("billmsec", str(bill_us // 1000)),
            ("progressmsec", "0"), ("answermsec", str((ans - start) // 1000 if ans else 0)),
            ("waitmsec", "0"), ("progress_mediamsec", "0"),
            ("flow_billmsec", str(dur_us // 1000)), ("uduration", str(dur_us)),
            ("billusec", str(bill_us)), ("progressusec", "0"),
            ("answerusec", str(ans - start if ans else 0)), ("waitusec", "0"),
            ("progress_mediausec", "0"), ("flow_billusec", str(dur_us))]
    frames = max(0, bill_us // 20000)
    nbytes = frames * (rate // 50)
    cdr += [("rtp_audio_in_raw_bytes", str(nbytes)), ("rtp_audio_in_media_bytes",
             str(nbytes)), ("rtp_audio_in_packet_count", str(frames)),
            ("rtp_audio_in_media_packet_count", str(frames))]
    cdr += [(f"rtp_audio_in_{k}", "0") for k in (
        "skip_packet_count", "jitter_packet_count", "dtmf_packet_count",
        "cng_packet_count", "flush_packet_count", "largest_jb_size")]
    cdr += [("rtp_audio_in_jitter_min_variance", "0.00"),
            ("rtp_audio_in_jitter_max_variance", "0.00"),
            ("rtp_audio_in_jitter_loss_rate", "0.00"),
            ("rtp_audio_in_jitter_burst_rate", "0.00"),
            ("rtp_audio_in_mean_interval", "20.00"), ("rtp_audio_in_flaw_total", "0"),
            ("rtp_audio_in_quality_percentage", "100.00"), ("rtp_audio_in_mos", "4.50"),
            ("rtp_audio_out_raw_bytes", str(nbytes)),
            ("rtp_audio_out_media_bytes", str(nbytes)),
            ("rtp_audio_out_packet_count", str(frames)),
            ("rtp_audio_out_media_packet_count", str(frames))]
    cdr += [(f"rtp_audio_{k}", "0") for k in (
        "out_skip_packet_count", "out_dtmf_packet_count", "out_cng_packet_count",
        "rtcp_packet_count", "rtcp_octet_count")]
    return cdr
