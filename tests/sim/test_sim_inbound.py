"""Inbound ESL behaviour of the emulator beyond the captures: subscriptions, filters,
myevents, bgapi/BACKGROUND_JOB, sendmsg, api ordering, event lag, the rest of the api set."""

from __future__ import annotations

import time
import wave
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from simwire import EslClient, events_of

from callctl.sim import api
from callctl.sim.switch import Switch, SwitchConfig


@pytest.fixture
def switch() -> Iterator[Switch]:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.0, speed=8.0))
    sw.start()
    yield sw
    sw.stop()


def client(sw: Switch, *commands: str) -> EslClient:
    cli = EslClient("127.0.0.1", sw.esl_port)
    cli.wait_frames(1)
    assert cli.command("auth ClueCon").headers[1][1] == "+OK accepted"
    for c in commands:
        cli.command(c)
    return cli


def reply(cli: EslClient, line: str) -> str:
    return dict(cli.command(line).headers).get("Reply-Text", "")


def test_subscription_replies(switch: Switch) -> None:
    cli = client(switch)
    assert reply(cli, "noevents") == "-ERR not listening for events"
    assert reply(cli, "event plain NOT_AN_EVENT") == "-ERR no keywords supplied"
    assert reply(cli, "events PLAIN channel_answer") == "+OK event listener enabled plain"
    assert reply(cli, "event xml SWITCH_EVENT_DTMF") == "+OK event listener enabled xml"
    assert reply(cli, "nixevent") == "-ERR no keywords supplied"
    assert reply(cli, "filter Unique-ID") == "-ERR invalid syntax"
    assert reply(cli, "filter add Event-Name CHANNEL_ANSWER") == \
        "+OK filter added. [Event-Name]=[CHANNEL_ANSWER]"
    assert reply(cli, "filter delete all") == "+OK filter deleted. [all][]"
    assert reply(cli, "log info") == "+OK log level info [6]"
    assert reply(cli, "log bogus") == "-ERR invalid log level"
    assert reply(cli, "nolog") == "+OK no longer logging"
    assert reply(cli, "nolog") == "-ERR not loging"
    assert reply(cli, "linger") == "-ERR not controlling a session"
    assert reply(cli, "sendmsg 123") == "-ERR invalid session id [123]"
    assert reply(cli, "myevents 123") == "-ERR invalid uuid"
    assert reply(cli, "frobnicate") == "-ERR command not found"


def test_custom_subclasses_and_all(switch: Switch) -> None:
    only_custom = client(switch, "event plain CUSTOM")               # no subclass: nothing
    one_sub = client(switch, "event plain CUSTOM mod_audio_fork::transcription")
    everything = client(switch, "event plain ALL")
    call = switch.place_call("park")
    assert call.wait_answered(5)
    call.channel.fire_custom("mod_audio_fork::transcription", '{"text":"hi"}')
    call.channel.fire_custom("mod_audio_fork::connect", None)
    ev = one_sub.wait_for(lambda f: f.name == "CUSTOM")
    assert ev.names()[0] == "Event-Subclass" and ev.ev_body == b'{"text":"hi"}'
    assert ev.ev("Event-Subclass") == "mod_audio_fork::transcription"
    everything.wait_for(lambda f: f.ev("Event-Subclass") == "mod_audio_fork::connect")
    gevent.sleep(0.05)
    assert [f for f in only_custom.frames if f.is_event] == []
    assert [f.ev("Event-Subclass") for f in one_sub.frames if f.is_event] == \
        ["mod_audio_fork::transcription"]


def test_filters_positive_negative_and_regex(switch: Switch) -> None:
    a = switch.place_call("park")
    b = switch.place_call("park")
    assert a.wait_answered(5) and b.wait_answered(5)
    pos = client(switch, "event plain DTMF", f"filter Unique-ID {a.uuid}")
    neg = client(switch, "event plain DTMF", f"filter Unique-ID -{a.uuid}",
                 "filter Event-Name DTMF")
    rx = client(switch, "event plain DTMF", "filter DTMF-Digit /^[0-4]$/")
    only_neg = client(switch, "event plain DTMF", "filter Unique-ID -nobody")
    a.dtmf("1")
    b.dtmf("7")
    a.dtmf("#")
    gevent.sleep(0.1)

    def digits(cli: EslClient) -> list[str | None]:
        return [f.ev("DTMF-Digit") for f in cli.frames if f.is_event]

    assert digits(pos) == ["1", "#"]
    assert digits(neg) == ["7"]
    assert digits(rx) == ["1"]
    assert digits(only_neg) == []        # only negative filters block everything
    dtmf = next(f for f in pos.frames if f.is_event)
    assert [k for k in dtmf.names() if k.startswith("variable_")] == []
    assert dtmf.names()[-3:] == ["DTMF-Digit", "DTMF-Duration", "DTMF-Source"]


def test_nixevent_after_all(switch: Switch) -> None:
    cli = client(switch, "event plain ALL", "nixevent CHANNEL_STATE CHANNEL_CALLSTATE CODEC")
    call = switch.place_call("park")
    cli.wait_for(lambda f: f.name == "CHANNEL_PARK" and f.ev("Unique-ID") == call.uuid)
    names = {f.name for f in events_of(cli.frames, call.uuid)}
    assert "CHANNEL_CREATE" in names and not names & {"CHANNEL_STATE", "CHANNEL_CALLSTATE"}


def test_myevents_binds_session_and_filters(switch: Switch) -> None:
    a = switch.place_call("park")
    b = switch.place_call("park")
    assert a.wait_answered(5) and b.wait_answered(5)
    cli = client(switch)
    assert reply(cli, f"myevents {a.uuid}") == "+OK Events Enabled"
    assert reply(cli, f"myevents {a.uuid}") == "-ERR aready enabled."
    assert reply(cli, "getvar sip_req_user") == "park"
    assert reply(cli, "getvar nope") == "-ERR command not found"
    assert reply(cli, "linger 5") == "+OK will linger 5 seconds"
    a.dtmf("5")
    b.dtmf("6")
    cli.wait_for(lambda f: f.name == "DTMF")
    gevent.sleep(0.05)
    assert {f.ev("Unique-ID") for f in cli.frames if f.is_event} == {a.uuid}
    # sendmsg without uuid goes to the bound session
    assert reply(cli, "sendmsg\ncall-command: hangup\nhangup-cause: USER_BUSY") == "+OK"
    assert a.wait_hangup(5) == "USER_BUSY"


def test_bgapi_background_job(switch: Switch) -> None:
    cli = client(switch, "event plain BACKGROUND_JOB")
    r = cli.command("bgapi status\nJob-UUID: my-job-1")
    assert r.headers == [("Content-Type", "command/reply"),
                         ("Reply-Text", "+OK Job-UUID: my-job-1"), ("Job-UUID", "my-job-1")]
    job = cli.wait_for(lambda f: f.name == "BACKGROUND_JOB")
    assert job.names()[13:] == ["Job-UUID", "Job-Command", "Content-Length"]
    assert job.ev("Job-UUID") == "my-job-1" and (job.ev_body or b"").startswith(b"UP ")
    cli.command("bgapi uuid_kill nope")
    job2 = cli.wait_for(lambda f: f.name == "BACKGROUND_JOB" and f.ev("Job-UUID") != "my-job-1")
    assert job2.ev("Job-Command-Arg") == "nope" and job2.ev_body == b"-ERR No such channel!\n"
    cli.command("bgapi nosuch")
    job3 = cli.wait_for(lambda f: f.name == "BACKGROUND_JOB" and f.ev("Job-Command") == "nosuch")
    assert job3.ev_body == b"-ERR nosuch Command not found!\n"


def test_api_response_precedes_events_it_causes(switch: Switch) -> None:
    cli = client(switch, "event plain CHANNEL_ANSWER CHANNEL_HANGUP")
    call = switch.place_call("park")
    assert call.wait_answered(5)
    cli.command(f"api uuid_kill {call.uuid}")
    hangup = cli.wait_for(lambda f: f.name == "CHANNEL_HANGUP")   # not a frame count: under
    kinds = [f.ctype for f in cli.frames]                          # load more may come first
    assert kinds.index("api/response") < cli.frames.index(hangup)


def test_event_delivery_lag_is_applied() -> None:
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0.2, speed=8.0))
    sw.start()
    try:
        cli = client(sw, "event plain CHANNEL_CREATE")
        t0 = time.monotonic()
        sw.place_call("park")
        cli.wait_for(lambda f: f.name == "CHANNEL_CREATE")
        assert time.monotonic() - t0 >= 0.19
    finally:
        sw.stop()


def test_sendmsg_execute_with_body_argument_and_event_uuid(switch: Switch,
                                                           tmp_path: Path) -> None:
    wav = tmp_path / "a b.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x10\x00" * 1600)
    call = switch.place_call("park")
    assert call.wait_answered(5)
    cli = client(switch, "event plain CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE PLAYBACK_STOP "
                         "PRIVATE_COMMAND")
    path = str(wav).encode()
    cli.send(f"sendmsg {call.uuid}\ncall-command: execute\nexecute-app-name: playback\n"
             f"event-uuid: ev-1\ncontent-type: text/plain\ncontent-length: {len(path)}\n\n"
             .encode() + path)
    done = cli.wait_for(lambda f: f.name == "CHANNEL_EXECUTE_COMPLETE"
                        and f.ev("Application") == "playback")
    assert done.ev("Application-UUID") == "ev-1" and done.ev("Application-Data") == str(wav)
    assert done.ev("Application-Response") == "FILE PLAYED"
    assert done.ev("variable_current_application") == "playback"
    private = cli.wait_for(lambda f: f.name == "PRIVATE_COMMAND")
    assert private.names()[0] == "Command" and private.ev("event-uuid") == "ev-1"


def test_api_bodies(switch: Switch, tmp_path: Path) -> None:
    call = switch.place_call("park")
    assert call.wait_answered(5)
    u = call.uuid
    assert api.execute(switch, "uuid_exists", u) == "true"
    assert api.execute(switch, "uuid_exists", "nope") == "false"
    assert api.execute(switch, "uuid_getvar", f"{u} nothing") == "_undef_"
    assert api.execute(switch, "uuid_setvar", f"{u} x 'a b'") == "+OK\n"
    assert api.execute(switch, "uuid_getvar", f"{u} x") == "a b"
    assert api.execute(switch, "uuid_setvar", u) == "-ERR No variable specified\n"
    assert api.execute(switch, "uuid_setvar", "") == "-USAGE: <uuid> <var> [value]\n"
    assert api.execute(switch, "uuid_answer", u) == "+OK\n"
    assert api.execute(switch, "uuid_answer", "nope") == "-ERROR\n"
    assert api.execute(switch, "uuid_kill", "") == "-USAGE: <uuid> [cause]\n"
    assert api.execute(switch, "uuid_break", "") == "-USAGE: <uuid> [all]\n"
    assert api.execute(switch, "uuid_bridge", f"{u} nope") == "-ERR Invalid uuid\n"
    assert api.execute(switch, "show", "channels count") == "\n1 total.\n"
    assert api.execute(switch, "uuid_audio_fork", "nope stop") == "-ERR Operation Failed\n"
    rec = tmp_path / "rec.wav"
    assert api.execute(switch, "uuid_record", f"{u} start {rec}") == "+OK Success\n"
    gevent.sleep(0.1)
    assert api.execute(switch, "uuid_record", f"{u} stop {rec}") == "+OK Success\n"
    with wave.open(str(rec)) as w:
        assert w.getframerate() == 8000 and w.getnframes() > 0
    assert api.execute(switch, "uuid_record", f"{u} stop {rec}") == \
        "-ERR Cannot stop record session!\n"
    assert call.event_names.count("RECORD_START") == call.event_names.count("RECORD_STOP") == 1
    assert api.execute(switch, "hupall", "USER_BUSY") == \
        "+OK hangup all channels with cause USER_BUSY\n"
    assert call.wait_hangup(5) == "USER_BUSY"
    assert api.execute(switch, "hupall", "") == \
        "+OK hangup all channels with cause MANAGER_REQUEST\n"


def test_originate_and_transfer(switch: Switch) -> None:
    out = api.execute(switch, "originate", "{origination_caller_id_number=1}sofia/gw/555 &park()")
    assert out.startswith("+OK ") and out.endswith("\n")
    uuid = out.split()[1].strip()
    ch = switch.channel(uuid)
    assert ch is not None and ch.answered.wait(5)
    assert api.execute(switch, "uuid_transfer", f"{uuid} 6000 XML default") == "+OK\n"
    gevent.sleep(0.1)
    assert ch.is_up() and ch.profile["Destination-Number"] == "6000"
    assert ch.event_names.count("CHANNEL_PARK") == 2
    assert api.execute(switch, "uuid_transfer", "nope 1") == "-ERR No such channel!\n"


def test_inbound_session_bound_socket_disconnects_or_lingers(switch: Switch) -> None:
    a = switch.place_call("park")
    b = switch.place_call("park")
    assert a.wait_answered(5) and b.wait_answered(5)
    plain = client(switch, f"myevents {a.uuid}")
    lingering = client(switch, f"myevents {b.uuid}", "linger")
    a.hangup()
    assert plain.wait_eof()
    last = plain.frames[-1]
    assert dict(last.headers)["Controlled-Session-UUID"] == a.uuid
    assert dict(last.headers)["Content-Disposition"] == "disconnect"
    assert plain.frames[-2].name == "CHANNEL_HANGUP_COMPLETE"
    assert a.wait_hangup(5) == "NORMAL_CLEARING"
    b.hangup()
    lingering.wait_for(lambda f: dict(f.headers).get("Content-Disposition") == "linger")
    assert b.wait_hangup(0.2) is None            # held by the lingering socket
    assert reply(lingering, "exit") == "+OK bye"
    assert b.wait_hangup(5) == "NORMAL_CLEARING"
    assert all(f.name != "CHANNEL_DESTROY" for f in plain.frames + lingering.frames)
