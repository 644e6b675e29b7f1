"""Malformed ESL mid-call, on a running daemon (emulated FreeSWITCH → daemon over outbound
ESL, real Vosk, espeak, real Redis): the emulated switch writes bad frames on one call's own
socket while another call keys in its account number, confirms it and is transferred. Each
bad frame is counted and ends only the call whose socket carried it (the switch sees the socket
close and hangs that channel up, as FreeSWITCH does); an event for a call the socket does not
carry is ignored; the other call's turns and the daemon go on, and it takes the next call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from conversation_rig import Rig, rig_fixture
from resume_rig import dial_keys, wait_quiet

from callctl.sim import callers
from callctl.sim.switch import SimCall

#: One call's socket each: (what FreeSWITCH wrote, the rule it breaks).
FAULTS = [
    (b"Content-Type: command/reply\nthis line has no colon\n\n", "is not 'Name: value'"),
    (b"Content-Type: command/reply\nReply-Text: \xc3\x28\n\n", "value is not UTF-8"),
    (b"Content-Length: 9999999999\nContent-Type: text/event-plain\n\n",
     "bad Content-Length: b'9999999999'"),
    (b"Content-Length: 22\nContent-Type: text/event-json\n\n{\"Event-Name\": \"DTMF\"}",
     "text/event-json received"),
]


def event(name: str, uuid: str, extra: str = "") -> bytes:
    body = f"Event-Name: {name}\nUnique-ID: {uuid}\n{extra}\n".encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(body), body)


def write_on_its_socket(call: SimCall, data: bytes) -> None:
    """What the emulated switch writes, unasked, on the call's outbound ESL socket."""
    session = call.channel.outbound
    assert session is not None and session.send(data)


@pytest.fixture
def rig(tmp_path: Path, redis_url: str, vosk_engine: Any) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path, redis_url, vosk_engine, flow="account")


def abuse_one(rig: Rig, fault: bytes) -> tuple[str, str | None]:
    """A call that hears its greeting, gets a foreign hangup event (ignored), then ``fault``;
    returns its uuid and how the switch saw it end (once the daemon forgot it too)."""
    call, _ = rig.call([callers.wait_answer(), callers.pause(60)])
    with gevent.Timeout(10):
        while not call.heard():
            gevent.sleep(0.05)
    write_on_its_socket(call, event("CHANNEL_HANGUP", "not-this-call",
                                    "Hangup-Cause: USER_BUSY"))
    gevent.sleep(0.3)
    assert call.hangup_cause is None and rig.daemon.registry.get(call.uuid) is not None
    write_on_its_socket(call, fault)
    cause = call.wait_hangup(15)
    with gevent.Timeout(10):
        while rig.daemon.registry.get(call.uuid) is not None:
            gevent.sleep(0.05)
    return call.uuid, cause


@pytest.mark.slow
def test_malformed_esl_on_one_call_while_another_call_is_transferred(
        rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    ended: list[tuple[str, str | None]] = []

    def attacker() -> None:
        for fault, _rule in FAULTS:
            ended.append(abuse_one(rig, fault))

    good, _ = rig.call([callers.wait_answer(), callers.pause(60)])
    g = gevent.spawn(attacker)
    assert wait_quiet(good, 1, 0.5, 15)            # the greeting
    write_on_its_socket(good, event("CHANNEL_HANGUP", "not-this-call",   # ignored: its
                                    "Hangup-Cause: USER_BUSY"))           # events go on
    dial_keys(good, "12345678")
    assert wait_quiet(good, 2, 0.5, 15), good.heard()
    assert "I heard 1 2 3 4 5 6 7 8. Is that correct?" in rig.said, rig.said
    dial_keys(good, "1")
    assert wait_quiet(good, 3, 0.5, 15), good.heard()      # "Thank you. Connecting you …"
    good.hangup()
    cause = rig.finish(good, 15)
    g.get(timeout=60)

    # the good call: its number confirmed, the lookup said, transferred to the queue
    assert cause == "NORMAL_CLEARING"
    assert rig.transfers(good.uuid) == ["accounts"]              # queue:accounts
    rec = rig.store.get_call(good.uuid)
    assert rec is not None and rec.dialog_state["slots"] == {"account": "12345678"}

    # each abused call ended by its own socket's fault (not a command timeout), failed, and
    # the log says which rule its bytes broke, naming the call
    out = capsys.readouterr().out.splitlines()
    lost = [ln for ln in out if "call.connection_lost" in ln]
    foreign = [ln for ln in out if "call.foreign_event" in ln and "not-this-call" in ln]
    assert len(foreign) == len(FAULTS) + 1, "each foreign event is logged, naming the call"
    assert len(ended) == len(FAULTS)
    for (_fault, rule), (uuid, switch_cause) in zip(FAULTS, ended, strict=True):
        assert switch_cause == "NORMAL_CLEARING", (rule, switch_cause)
        assert any(rule in ln and uuid in ln for ln in lost), (rule, lost)
    assert rig.sample("callctl_calls_total", {"route": "account", "outcome": "failed",
                                              "cause": "NORMAL_CLEARING"}) == len(FAULTS)
    errors = {k: rig.sample("callctl_protocol_errors_total",
                            {"source": "esl_outbound", "kind": k})
              for k in ("bad_frame", "unknown_content_type", "truncated", "timeout")}
    assert errors == {"bad_frame": len(FAULTS), "unknown_content_type": 0, "truncated": 0,
                      "timeout": 0}, errors
    assert rig.sample("callctl_protocol_errors_total",
                      {"source": "esl_outbound", "kind": "unknown_call"}) == len(FAULTS) + 1

    # and the daemon takes the next call as if nothing happened
    nxt, _ = rig.call([callers.wait_answer(), callers.wait_for_bot(silence_s=0.5),
                       callers.hangup()])
    assert rig.finish(nxt, 20) is not None and nxt.heard()
