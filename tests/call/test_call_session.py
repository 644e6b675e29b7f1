"""CallSession + OutboundServer against the emulated switch (callctl.sim) over real sockets."""

from __future__ import annotations

import gc
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import gevent
import numpy as np
import pytest

from callctl.call.session import CallSession, Inbox, TimerFired
from callctl.call.state import CallState, Trigger
from callctl.config import Config, DaemonConfig, EslConfig, RouteConfig, RoutingConfig
from callctl.esl.adapter import EslEvent, OutboundConnection
from callctl.esl.outbound import OutboundServer
from callctl.metrics import Metrics
from callctl.sim.switch import SimCall, Switch, SwitchConfig

DID = "+15551230000"
OTHER = "+15551230001"


def write_wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    return path


@dataclass
class Recorder:
    """A Conversation that records what reaches it (the real one is written elsewhere)."""

    events: list[object] = field(default_factory=list)
    started: list[CallSession] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    def on_start(self, call: CallSession) -> None:
        self.started.append(call)

    def on_event(self, event: object) -> None:
        self.events.append(event)

    def on_end(self, cause: str) -> None:
        self.ended.append(cause)

    def names(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, EslEvent)]


class Rig:
    def __init__(self, cfg: Config, metrics: Metrics, conv: bool = True) -> None:
        self.recorders: list[Recorder] = []

        def factory(call: CallSession) -> Recorder:
            r = Recorder()
            self.recorders.append(r)
            return r

        self.server = OutboundServer(cfg, metrics, conversation_factory=factory if conv else None,
                                     port=0)
        self.server.start()
        plan = f"socket 127.0.0.1:{self.server.port} async full"
        self.sw = Switch(SwitchConfig(esl_port=0, dialplan={DID: plan, OTHER: plan, "999": plan},
                                      event_delay_s=0, speed=4.0))
        self.sw.start()

    def call(self, did: str = DID) -> SimCall:
        return self.sw.place_call(did, "+15557654321", "PCMU")

    def wait_idle(self, timeout: float = 5) -> bool:
        deadline = gevent.get_hub().loop.now() + timeout
        while len(self.server.registry) and gevent.get_hub().loop.now() < deadline:
            gevent.sleep(0.02)
        return len(self.server.registry) == 0

    def close(self) -> None:
        self.sw.stop()
        self.server.stop()


def make_cfg(tmp_path: Path, **daemon: object) -> Config:
    greeting = write_wav(tmp_path / "greeting.wav", 0.6)
    return Config(
        daemon=replace(DaemonConfig(), **daemon),  # type: ignore[arg-type]
        esl=EslConfig(command_timeout_s=2.0, linger_s=5),
        routes=(RouteConfig(did=DID, flow="front_desk", greeting=str(greeting)),
                RouteConfig(did=OTHER, flow="small", max_calls=1)),
        routing=RoutingConfig(unknown_action="reject", unknown_cause="UNALLOCATED_NUMBER"),
    )


@pytest.fixture
def rig(tmp_path: Path, metrics: Metrics) -> Iterator[Rig]:
    r = Rig(make_cfg(tmp_path), metrics)
    yield r
    r.close()


def session_for(rig: Rig, call: SimCall, timeout: float = 3) -> CallSession:
    with gevent.Timeout(timeout):
        while (s := rig.server.registry.get(call.uuid)) is None:
            gevent.sleep(0.01)
    return s


def test_full_call_greeting_dtmf_hangup(rig: Rig, metrics: Metrics) -> None:
    call = rig.call()
    assert call.wait_answered(3)
    s = session_for(rig, call)
    with gevent.Timeout(5):
        while s.state is not CallState.SPEAKING and not rig.recorders:
            gevent.sleep(0.01)
        while "PLAYBACK_STOP" not in rig.recorders[0].names():
            gevent.sleep(0.02)
        while s.state is not CallState.SPEAKING:   # the greeting is over; the dialog decides
            gevent.sleep(0.02)
    heard = call.heard()
    assert heard and heard[0].source.endswith("greeting.wav") and not heard[0].interrupted
    call.dtmf("5")
    call.dtmf("#")
    with gevent.Timeout(3):
        while rig.recorders[0].names().count("DTMF") < 2:
            gevent.sleep(0.01)
    digits = [e.headers["DTMF-Digit"] for e in rig.recorders[0].events
              if isinstance(e, EslEvent) and e.name == "DTMF"]
    assert digits == ["5", "#"]
    names = rig.recorders[0].names()
    assert "PLAYBACK_START" in names and "PLAYBACK_STOP" in names
    call.hangup()
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    assert rig.wait_idle()
    assert rig.recorders[0].ended == ["NORMAL_CLEARING"]
    assert s.state is CallState.ENDED
    assert metrics.calls.labels(route="front_desk", outcome="completed",
                                cause="NORMAL_CLEARING")._value.get() == 1


def test_we_hang_up_twice_harmlessly(rig: Rig) -> None:
    call = rig.call()
    assert call.wait_answered(3)
    s = session_for(rig, call)
    s.request_hangup("NORMAL_CLEARING")
    s.request_hangup("USER_BUSY")
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    assert rig.wait_idle()
    assert s.outcome == "hungup_by_us"


def test_transfer_to_extension(rig: Rig) -> None:
    call = rig.call()
    assert call.wait_answered(3)
    s = session_for(rig, call)
    s.request_transfer("1000")
    assert s.ended.wait(5)
    assert s.outcome == "transferred" and s.cause == "TRANSFERRED"
    assert rig.wait_idle()
    call.hangup()
    call.wait_hangup(5)


def test_unknown_number_rejected_with_cause(rig: Rig, metrics: Metrics) -> None:
    call = rig.call("999")
    assert call.wait_hangup(5) == "UNALLOCATED_NUMBER"
    assert not call.wait_answered(0.01)
    assert metrics.calls_rejected.labels(reason="no_route")._value.get() == 1


def test_route_over_capacity_rejected(rig: Rig, metrics: Metrics) -> None:
    first = rig.call(OTHER)
    assert first.wait_answered(3)
    second = rig.call(OTHER)
    assert second.wait_hangup(5) == "NORMAL_TEMPORARY_FAILURE"
    assert metrics.calls_rejected.labels(reason="route_capacity")._value.get() == 1
    first.hangup()
    assert first.wait_hangup(5)
    assert rig.wait_idle()


def test_daemon_over_capacity_rejected(tmp_path: Path, metrics: Metrics) -> None:
    rig = Rig(make_cfg(tmp_path, max_calls=1, over_capacity_cause="USER_BUSY"), metrics)
    try:
        first = rig.call()
        assert first.wait_answered(3)
        second = rig.call()
        assert second.wait_hangup(5) == "USER_BUSY"
        assert metrics.calls_rejected.labels(reason="capacity")._value.get() == 1
        first.hangup()
        assert rig.wait_idle()
    finally:
        rig.close()


@pytest.mark.parametrize("when", ["ringing", "speaking", "answered", "listening", "thinking",
                                  "transferring"])
def test_caller_hangup_in_every_state(rig: Rig, when: str) -> None:
    call = rig.call(OTHER) if when in ("answered", "listening", "thinking") else rig.call()
    if when == "ringing":
        call.hangup("ORIGINATOR_CANCEL")
        assert call.wait_hangup(5)
        assert rig.wait_idle()
        return
    assert call.wait_answered(3)
    s = session_for(rig, call)
    if when == "transferring":
        s.request_transfer("sip:agent@127.0.0.1")
    if when in ("listening", "thinking"):       # what the Conversation would do
        with gevent.Timeout(3):
            while s.state is not CallState.ANSWERED:
                gevent.sleep(0.005)
        s.transition(Trigger.LISTEN)
        if when == "thinking":
            s.transition(Trigger.THINK)
    want = {"speaking": CallState.SPEAKING, "answered": CallState.ANSWERED,
            "listening": CallState.LISTENING, "thinking": CallState.THINKING,
            "transferring": CallState.TRANSFERRING}[when]
    with gevent.Timeout(3):
        while s.state is not want and not s.ended.is_set():
            gevent.sleep(0.005)
    call.hangup()
    assert call.wait_hangup(5) == "NORMAL_CLEARING"
    assert s.ended.wait(5)
    assert rig.wait_idle()
    assert s.state is CallState.ENDED and want in s.machine.history
    assert rig.recorders[-1].ended == ["NORMAL_CLEARING"]


def test_dtmf_storm_reaches_session_without_loss_or_crash(rig: Rig) -> None:
    call = rig.call()
    assert call.wait_answered(3)
    s = session_for(rig, call)
    with gevent.Timeout(3):
        while s.conversation is None:
            gevent.sleep(0.01)
    for i in range(300):
        call.dtmf("0123456789*#"[i % 12])
    with gevent.Timeout(10):
        while rig.recorders[0].names().count("DTMF") < 300:
            gevent.sleep(0.02)
    call.hangup()
    assert call.wait_hangup(5)
    assert rig.wait_idle()


def _ours() -> tuple[int, int]:
    """(live greenlets not owned by the emulator, live CallSession/OutboundConnection)."""
    gc.collect()
    objs = gc.get_objects()
    live = sum(1 for o in objs if isinstance(o, gevent.Greenlet) and not o.dead
               and not str(getattr(getattr(o, "_run", None), "__module__", "")
                           ).startswith("callctl.sim"))
    owners = sum(1 for o in objs if isinstance(o, CallSession | OutboundConnection))
    return live, owners


@pytest.mark.slow
def test_no_greenlet_growth_after_200_short_calls(tmp_path: Path, metrics: Metrics) -> None:
    rig = Rig(make_cfg(tmp_path), metrics, conv=False)
    try:
        def batch(n: int) -> None:
            calls = [rig.call(OTHER if i % 2 else DID) for i in range(n)]
            for c in calls:
                if c.wait_answered(5):
                    c.hangup()
            for c in calls:
                c.wait_hangup(5)
            assert rig.wait_idle(10)

        batch(10)
        gevent.sleep(0.3)
        before, _ = _ours()
        for _ in range(20):
            batch(10)
        gevent.sleep(0.5)
        after, owners = _ours()
        assert after <= before + 5, (before, after)
        assert owners == 0
        assert len(rig.server.registry) == 0
    finally:
        rig.close()


def test_inbox_control_first_media_bounded_terminal_kept() -> None:
    box = Inbox(control_max=2, media_max=2)
    for i in range(4):
        box.put_media(i)
    assert box.dropped_media == 2
    box.put_control("a")
    box.put_control("b")
    assert not box.put_control("c")
    assert box.put_control("HANGUP", terminal=True)
    got = [box.get(0) for _ in range(5)]
    assert got == ["a", "b", "HANGUP", 2, 3]
    assert box.get(0.01) is None
    assert isinstance(TimerFired("x"), TimerFired)


def test_inbox_must_deliver_messages_pass_a_full_control_lane() -> None:
    dropped: list[object] = []
    box = Inbox(control_max=1, media_max=1)
    box.on_drop = dropped.append
    assert box.put_control("a")
    assert not box.put_control("b")                  # an ordinary message: dropped, counted
    assert box.put_control(TimerFired("t"))          # must_deliver: queued past the bound
    assert box.dropped_control == 1 and dropped == ["b"]
    assert [box.get(0), box.get(0)] == ["a", TimerFired("t")]


def test_full_control_lane_counts_drops_and_keeps_timers(rig: Rig, metrics: Metrics) -> None:
    call = rig.call()
    assert call.wait_answered(3)
    s = session_for(rig, call)
    with gevent.Timeout(3):
        while not rig.recorders:
            gevent.sleep(0.01)
    s.inbox.control_max = 0                          # a tiny lane: everything overflows
    assert not s.inbox.put_control("noise")
    s.call_later(0.01, "must")
    with gevent.Timeout(3):
        while not any(isinstance(e, TimerFired) and e.name == "must"
                      for e in rig.recorders[0].events):
            gevent.sleep(0.01)
    assert metrics.registry.get_sample_value("callctl_inbox_dropped_total",
                                             {"kind": "str"}) == 1
    s.inbox.control_max = 1000
    call.hangup()
    assert rig.wait_idle()
