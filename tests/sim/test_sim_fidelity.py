"""The emulator against the real FreeSWITCH 1.10.12 captures (fixtures/freeswitch-1.10.12).

Each test drives the emulator the way the capture's client drove FreeSWITCH and compares:
Content-Types and outer header order, reply texts, api bodies, event names and sequence,
event header NAMES AND ORDER (pairwise, event by event), URL-encoding, body formats and the
disconnect notices.

Values that must differ and are NOT compared: uuids (Unique-ID, Core-UUID, Job-UUID,
Application-UUID unless the client chose it), timestamps (Event-Date-*, *-Time, epochs,
``status`` uptime numbers, ``created``), hostnames/IPs (FreeSWITCH-Hostname/-Switchname/-IPv4/
-IPv6, hostname column), Event-Sequence, Event-Calling-Line-Number, the caller's SIP identity
(sipp vs. the emulator's caller: Channel-Name, caller id, SIP variables' values) and variable
values in general. Variable NAMES are compared in order for CHANNEL_CREATE, the connect reply
and every event of the caller-bye scenarios (02/09); for the other scenarios as sets minus
``LOOSE_VARS`` (SIP dialog variables sofia re-sets at moments that depend on SIP timing).
``CAPTURE_ONLY_VARS`` are set by the captures' own dialplan step ``set fsreal_route=…``,
which the emulator's dialplan lacks; its CHANNEL_EXECUTE/_COMPLETE pair is dropped from the
capture sequence for the same reason.
"""

from __future__ import annotations

import json
import math
import re
import struct
import wave
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gevent
import gevent.event
import pytest
from gevent.server import StreamServer
from simwire import (
    EslClient,
    Frame,
    conversation,
    events_of,
    parse_stream,
    raw_encoded_value,
    sends_with_frames_before,
)

from callctl.sim.switch import Switch, SwitchConfig

PW = "fsreal-ESL-pw"
CAPTURE_ONLY_VARS = {"variable_fsreal_route"}
# variables whose presence depends on timing/SIP details the emulator does not model
LOOSE_VARS = {"variable_sip_to_tag", "variable_sip_cseq", "variable_sip_term_status",
              "variable_proto_specific_hangup_cause",
              "variable_sip_term_cause", "variable_last_arg", "variable_answer_stamp",
              "variable_current_application_response", "variable_current_application_data",
              "variable_socket_resume"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
COMPARED_VALUES = ("Event-Name", "Event-Subclass", "Event-Calling-File",
                   "Event-Calling-Function", "Channel-State", "Channel-Call-State",
                   "Channel-State-Number", "Answer-State", "Hangup-Cause", "Application",
                   "Application-Response", "Playback-Status", "Call-Direction",
                   "Original-Channel-Call-State", "Channel-Call-State-Number",
                   "Channel-Read-Codec-Name", "Channel-Read-Codec-Rate", "DTMF-Source",
                   "call-command", "execute-app-name", "event-lock", "lead-frames")


@pytest.fixture
def switch() -> Iterator[Switch]:
    sw = Switch(SwitchConfig(esl_port=0, password=PW, event_delay_s=0.0, speed=8.0,
                             hostname="vm"))
    sw.start()
    yield sw
    sw.stop()


def capture(fixtures_dir: Path, name: str) -> list[Frame]:
    frames, rest = parse_stream((fixtures_dir / name).read_bytes())
    assert rest == b""
    return frames


def norm_status(body: str) -> list[str]:
    out = []
    for line in body.split("\n"):
        line = re.sub(r"\d+(\.\d+)?", "N", line)
        out.append(re.sub(r"(year|day|hour|minute|second|millisecond|microsecond)s\b", r"\1",
                          line))
    return out


def non_var_names(fr: Frame) -> list[str]:
    return [k for k in fr.names() if not k.startswith("variable_")]


def var_names(fr: Frame) -> list[str]:
    return [k for k in fr.names() if k.startswith("variable_")]


def signature(frames: list[Frame]) -> list[str]:
    return [f"{f.ctype} {f.name}".strip() for f in frames]


def compare_events(real: list[Frame], ours: list[Frame], var_order: bool = False) -> None:
    """Same event sequence; per event: same non-variable header names in the same order, the
    same values for ``COMPARED_VALUES``, the same variable names (see module doc); with
    ``var_order`` the variable names must also come in FreeSWITCH's order."""
    assert [f.name for f in ours] == [f.name for f in real]
    for r, o in zip(real, ours, strict=True):
        where = f"{r.name} #{real.index(r)}"
        assert non_var_names(o) == non_var_names(r), where
        for key in COMPARED_VALUES:
            assert o.ev(key) == r.ev(key), f"{where}: {key}"
        rv = set(var_names(r)) - CAPTURE_ONLY_VARS
        ov = set(var_names(o)) - CAPTURE_ONLY_VARS
        assert bool(rv) == bool(ov), where
        if r.name == "CHANNEL_CREATE":
            assert [v for v in var_names(o) if v not in CAPTURE_ONLY_VARS] == \
                [v for v in var_names(r) if v not in CAPTURE_ONLY_VARS]
        else:
            assert rv - LOOSE_VARS == ov - LOOSE_VARS, f"{where}: {rv ^ ov}"
        if var_order:
            assert [v for v in var_names(o) if v not in CAPTURE_ONLY_VARS] == \
                [v for v in var_names(r) if v not in CAPTURE_ONLY_VARS], where
        if r.ev_body is not None or o.ev_body is not None:
            assert (r.ev_body is None) == (o.ev_body is None), where


def drop_set_app(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if not (f.name.startswith("CHANNEL_EXECUTE")
                                      and f.ev("Application") == "set")]


def wait_event(cli: EslClient, name: str, uuid: str, n: int = 1, timeout: float = 10) -> None:
    gevent.with_timeout(timeout, _wait_n, cli, name, uuid, n)


def _wait_n(cli: EslClient, name: str, uuid: str, n: int) -> None:
    while sum(1 for f in events_of(cli.frames, uuid) if f.name == name) < n:
        gevent.sleep(0.005)


def listener(sw: Switch, fmt: str = "plain") -> EslClient:
    cli = EslClient("127.0.0.1", sw.esl_port)
    cli.wait_frames(1)
    assert cli.command(f"auth {PW}").headers[1] == ("Reply-Text", "+OK accepted")
    cli.command(f"event {fmt} ALL")
    return cli


def write_tone(path: Path, seconds: float = 1.5, rate: int = 8000, freq: float = 660) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i
                                                                        / rate)))
                               for i in range(int(seconds * rate))))


# ---------------------------------------------------------------------- 00: inbound basics

def test_00_auth_api_status_replay(switch: Switch, fixtures_dir: Path) -> None:
    real = parse_stream(_recv_bytes(fixtures_dir / "00_esl_auth_api_status_raw.txt"))[0]
    cli = EslClient("127.0.0.1", switch.esl_port)
    for data, before in sends_with_frames_before(fixtures_dir / "00_esl_auth_api_status_raw.txt"):
        cli.wait_frames(before)
        cli.send(data)
    assert cli.wait_eof()
    ours = cli.frames
    assert signature(ours) == signature(real)
    for r, o in zip(real, ours, strict=True):
        assert o.headers[0][0] == r.headers[0][0] and [k for k, _ in o.headers] == \
            [k for k, _ in r.headers]
        if r.ctype == "command/reply":
            assert UUID.sub("U", dict(o.headers)["Reply-Text"]) == \
                UUID.sub("U", dict(r.headers)["Reply-Text"])
        elif r.body.startswith(b"UP "):
            assert norm_status(o.body.decode()) == norm_status(r.body.decode())
        else:
            assert o.body == r.body            # version, show channels (both forms), errors


def _recv_bytes(path: Path) -> bytes:
    return b"".join(c for k, c in conversation(path) if k == "RECV")


def test_00_bad_auth_is_byte_exact(switch: Switch, fixtures_dir: Path) -> None:
    cli = EslClient("127.0.0.1", switch.esl_port)
    cli.wait_frames(1)
    cli.send("auth wrongpw\n\n")
    assert cli.wait_eof()
    assert cli.raw == _recv_bytes(fixtures_dir / "00_esl_bad_auth_raw.txt")


def test_00_command_before_auth_is_byte_exact(switch: Switch, fixtures_dir: Path) -> None:
    cli = EslClient("127.0.0.1", switch.esl_port)
    cli.wait_frames(1)
    cli.send("api status\n\n")
    cli.wait_frames(2)
    gevent.sleep(0.05)
    assert cli.raw == _recv_bytes(fixtures_dir / "00_esl_cmd_before_auth_raw.txt")
    assert not cli.eof                         # still connected, still unauthenticated
    assert cli.command(f"auth {PW}").headers[1][1] == "+OK accepted"


# ---------------------------------------------------------------------- 01: park + api

def test_01_park_api_replies(switch: Switch, fixtures_dir: Path) -> None:
    replies = json.loads((fixtures_dir / "01_park_api_api_replies.json").read_text())
    zero = "00000000-0000-0000-0000-000000000000"
    cli = listener(switch)

    def api(line: str) -> str:
        return cli.command(f"api {line}").body.decode()

    assert api(f"uuid_kill {zero}") == replies["uuid_kill_bogus"]
    assert api(f"uuid_break {zero}") == replies["uuid_break_bogus"]
    assert api(f"uuid_broadcast {zero} tone_stream://%(100,100,440) aleg") == \
        replies["uuid_broadcast_bogus"]
    assert api("show channels as json") == replies["show_channels_empty"]
    call = switch.place_call("park", caller_id="sipp", codec="PCMA")
    wait_event(cli, "CHANNEL_PARK", call.uuid)
    during = json.loads(api("show channels as json"))
    real = json.loads(replies["show_channels_during_call"])
    assert during["row_count"] == 1 and list(during["rows"][0]) == list(real["rows"][0])
    for key in ("direction", "state", "cid_name", "application", "application_data",
                "dialplan", "context", "read_codec", "read_rate", "read_bit_rate",
                "write_codec", "callstate", "secure", "presence_id", "call_uuid"):
        assert during["rows"][0][key] == real["rows"][0][key], key
    plain = api("show channels").split("\n")
    real_plain = replies["show_channels_plain"].split("\n")
    assert plain[0] == real_plain[0] and plain[-3:] == real_plain[-3:]
    assert api(f"uuid_setvar {call.uuid} fsreal_route park") == "+OK\n"
    assert api(f"uuid_getvar {call.uuid} fsreal_route") == replies["uuid_getvar"]
    assert api(f"uuid_broadcast {call.uuid} tone_stream://%(500,500,440);loops=20 aleg") == \
        replies["uuid_broadcast"]
    wait_event(cli, "PLAYBACK_START", call.uuid)
    assert api(f"uuid_break {call.uuid} all") == replies["uuid_break_all"]
    wait_event(cli, "PLAYBACK_STOP", call.uuid)
    assert api(f"uuid_broadcast {call.uuid} tone_stream://%(300,300,600);loops=20 both") == \
        replies["uuid_broadcast_both"]
    wait_event(cli, "PLAYBACK_START", call.uuid, 2)
    assert api(f"uuid_break {call.uuid}") == replies["uuid_break_noarg"]
    wait_event(cli, "PLAYBACK_STOP", call.uuid, 2)
    assert api(f"uuid_kill {call.uuid}") == replies["uuid_kill"]
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    assert api(f"uuid_kill {call.uuid}") == replies["uuid_kill_after_hangup"]
    assert api("show channels as json") == replies["show_channels_after"]
    wait_event(cli, "CHANNEL_STATE", call.uuid, 7)
    real_ev = drop_set_app(events_of(capture(fixtures_dir, "01_park_api_events_recv_stream.txt"),
                                     "0a775e25-9509-4dba-a8ef-a1f8363affea"))
    compare_events(real_ev, events_of(cli.frames, call.uuid))


# ---------------------------------------------------------------------- 02 / 09: caller bye

@pytest.mark.parametrize("fmt,name", [("plain", "02_caller_bye_events_recv_stream.txt"),
                                      ("json", "09_caller_bye_json_events_recv_stream.txt")])
def test_02_09_caller_bye_sequence(switch: Switch, fixtures_dir: Path, fmt: str,
                                   name: str) -> None:
    cli = listener(switch, fmt)
    call = switch.place_call("park", caller_id="sipp", codec="PCMA")
    wait_event(cli, "CHANNEL_PARK", call.uuid)
    call.hangup()
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    wait_event(cli, "CHANNEL_DESTROY", call.uuid)
    gevent.sleep(0.05)
    real_all = capture(fixtures_dir, name)
    uuid = next(f.ev("Unique-ID") for f in real_all if f.name == "CHANNEL_CREATE")
    real = drop_set_app(events_of(real_all, uuid))
    ours = events_of(cli.frames, call.uuid)
    compare_events(real, ours, var_order=True)       # caller bye: even variable order
    hc = next(f for f in ours if f.name == "CHANNEL_HANGUP_COMPLETE")
    assert hc.names().count("Hangup-Cause") == 2
    assert hc.ev("variable_sip_hangup_disposition") == "recv_bye"
    if fmt == "plain":
        # URL-encoding as FreeSWITCH: ':' ' ' '@' encoded, ',' kept
        date = raw_encoded_value(hc, "Event-Date-GMT") or ""
        assert re.fullmatch(r"\w{3},%20\d\d%20\w{3}%20\d{4}%20\d\d%3A\d\d%3A\d\d%20GMT", date)
        assert raw_encoded_value(hc, "Channel-Name") == "sofia/external/sipp%40127.0.0.1%3A5070"
    else:
        assert all(f.ctype == "text/event-json" for f in ours)
        assert all(isinstance(v, str) for f in ours for _, v in f.ev_headers)


# ---------------------------------------------------------------------- 08: sound files

def test_08_sndfile_broadcast_and_missing_file(switch: Switch, fixtures_dir: Path,
                                               tmp_path: Path) -> None:
    replies = json.loads((fixtures_dir / "08_sndfile_api_replies.json").read_text())
    wav = tmp_path / "tone_660hz_1500ms_8k.wav"
    write_tone(wav)
    cli = listener(switch)
    call = switch.place_call("park", caller_id="sipp", codec="PCMA")
    wait_event(cli, "CHANNEL_PARK", call.uuid)
    assert cli.command(f"api uuid_broadcast {call.uuid} {wav} aleg").body.decode() == \
        replies["uuid_broadcast_wav"]
    wait_event(cli, "PRIVATE_COMMAND", call.uuid)
    stop = next(f for f in events_of(cli.frames, call.uuid) if f.name == "PLAYBACK_STOP")
    assert stop.ev("Playback-Status") == replies["playback_stop_status"]
    missing = tmp_path / "does_not_exist.wav"
    assert cli.command(f"api uuid_broadcast {call.uuid} {missing} aleg").body.decode() == \
        replies["uuid_broadcast_missing_file"]
    wait_event(cli, "PRIVATE_COMMAND", call.uuid, 2)
    assert cli.command(f"api uuid_kill {call.uuid} USER_BUSY").body.decode() == \
        replies["uuid_kill_user_busy"]
    assert call.wait_hangup(5) == "USER_BUSY"
    wait_event(cli, "CHANNEL_DESTROY", call.uuid)
    gevent.sleep(0.05)
    real_all = capture(fixtures_dir, "08_sndfile_events_recv_stream.txt")
    uuid = next(f.ev("Unique-ID") for f in real_all if f.name == "CHANNEL_CREATE")
    real, ours = drop_set_app(events_of(real_all, uuid)), events_of(cli.frames, call.uuid)
    compare_events(real, ours)
    done = [f.ev("Application-Response") for f in ours
            if f.name == "CHANNEL_EXECUTE_COMPLETE" and f.ev("Application") == "playback"]
    assert done == ["FILE PLAYED", "FILE NOT FOUND"]
    played = next(f for f in ours if f.name == "CHANNEL_EXECUTE_COMPLETE"
              and f.ev("Application") == "playback")
    assert raw_encoded_value(played, "Application-Response") == "FILE%20PLAYED"
    private = next(f for f in ours if f.name == "PRIVATE_COMMAND")
    assert private.ev("Event-Name") == "COMMAND" and private.ev("lead-frames") == "5"


# ---------------------------------------------------------------------- 03 / 06: outbound

def _outbound_scenario(switch_factory: type[Switch], fixtures_dir: Path, raw_name: str,
                       ) -> tuple[list[Frame], list[Frame], str, Switch]:
    """Serve one outbound socket that replays the capture's client; returns (real frames,
    our frames, our channel uuid, switch)."""
    raw = fixtures_dir / raw_name
    real, rest = parse_stream(_recv_bytes(raw))
    assert rest == b""
    real_uuid = dict(real[0].headers)["Unique-ID"]
    result: dict[str, EslClient] = {}
    finished = gevent.event.Event()

    def handle(sock: object, addr: object) -> None:
        cli = EslClient("", 0, sock=sock)
        result["cli"] = cli
        uuid = ""
        for data, before in sends_with_frames_before(raw):
            if not data:
                continue
            want = Counter(s for s in signature(real[:before]) if "CHANNEL_PARK" not in s)
            gevent.with_timeout(10, _wait_counts, cli, want)
            if not uuid:
                uuid = dict(cli.frames[0].headers).get("Unique-ID", "") if cli.frames else ""
            text = data.decode().replace(real_uuid, uuid).replace("fsreal_route",
                                                                  "current_application")
            cli.send(text)
        cli.wait_eof(10)
        finished.set()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    sw = switch_factory(SwitchConfig(
        esl_port=0, password=PW, event_delay_s=0.02, speed=8.0, hostname="vm",
        dialplan={"socket": f"socket 127.0.0.1:{server.server_port} async full"}))
    sw.start()
    call = sw.place_call("socket", caller_id="sipp", codec="PCMA")
    assert finished.wait(20), "outbound replay did not finish"
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    server.stop()
    return real, result["cli"].frames, call.uuid, sw


def _wait_counts(cli: EslClient, want: Counter[str]) -> None:
    while True:
        have = Counter(signature(cli.frames))
        if all(have[k] >= n for k, n in want.items()):
            return
        gevent.sleep(0.005)


@pytest.mark.parametrize("raw_name", ["03_socket_outbound_socket_raw.txt",
                                      "06_socket_nolinger_outbound_socket_raw.txt"])
def test_03_06_outbound_session(fixtures_dir: Path, raw_name: str) -> None:
    real, ours, uuid, sw = _outbound_scenario(Switch, fixtures_dir, raw_name)
    try:
        # CHANNEL_PARK races with myevents in FreeSWITCH (03 lacks it, 06 has it)
        def strip(frames: list[Frame]) -> list[Frame]:
            return [f for f in frames if f.name != "CHANNEL_PARK"]
        r, o = strip(real), strip(ours)
        assert signature(o) == signature(r)
        assert all(f.name != "CHANNEL_DESTROY" for f in ours)
        # the connect reply: a CHANNEL_DATA event, same header names in the same order
        assert [k for k, _ in o[0].headers if not k.startswith("variable_")] == \
            [k for k, _ in r[0].headers if not k.startswith("variable_")]
        assert [k for k, _ in o[0].headers if k.startswith("variable_")] == \
            [k for k, _ in r[0].headers if k.startswith("variable_")
             and k not in CAPTURE_ONLY_VARS]
        assert o[0].headers[-4:] == r[0].headers[-4:]   # command/reply, %2BOK%0A, async, full
        for rf, of in zip(r[1:], o[1:], strict=True):
            assert [k for k, _ in of.headers] == [k for k, _ in rf.headers], rf.ctype
            if rf.ctype == "command/reply":
                assert of.headers == rf.headers
            elif rf.ctype == "api/response":
                assert of.body == rf.body
            elif rf.ctype == "text/disconnect-notice":
                assert of.body == rf.body
                assert dict(of.headers)["Controlled-Session-UUID"] == uuid
                if dict(rf.headers)["Content-Disposition"] == "linger":
                    assert dict(of.headers)["Linger-Time"] == "-1"
                    assert dict(of.headers)["Channel-Name"] == \
                        "sofia/external/sipp@127.0.0.1:5070"
        compare_events([f for f in r if f.is_event], [f for f in o if f.is_event])
        play = [f for f in o if f.name == "CHANNEL_EXECUTE" and f.ev("Application") == "playback"]
        assert play[0].ev("Application-UUID") == "fsreal-play-1"
    finally:
        sw.stop()


def test_heartbeat_and_api_event_layout(fixtures_dir: Path) -> None:
    sw = Switch(SwitchConfig(esl_port=0, password=PW, event_delay_s=0.0, heartbeat_s=0.05))
    sw.start()
    try:
        cli = listener(sw)
        cli.command("api show channels as json")
        hb = cli.wait_for(lambda f: f.name == "HEARTBEAT")
        api_ev = cli.wait_for(lambda f: f.name == "API")
    finally:
        sw.stop()
    real = capture(fixtures_dir, "01_park_api_events_recv_stream.txt")
    real_hb = next(f for f in real if f.name == "HEARTBEAT")
    real_api = next(f for f in real if f.name == "API" and f.ev("API-Command-Argument"))
    assert hb.names() == real_hb.names()
    assert hb.ev("Event-Info") == "System Ready"
    assert hb.ev("FreeSWITCH-Version") == real_hb.ev("FreeSWITCH-Version")
    assert raw_encoded_value(hb, "Event-Info") == "System%20Ready"
    assert api_ev.names() == real_api.names()
    assert (api_ev.ev("API-Command"), api_ev.ev("API-Command-Argument")) == \
        ("show", "channels as json")
    for key in ("Event-Calling-File", "Event-Calling-Function"):
        assert hb.ev(key) == real_hb.ev(key) and api_ev.ev(key) == real_api.ev(key)
