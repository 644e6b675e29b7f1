"""A hangup asked for while the bot is speaking (NOC, drain, dialog) takes effect at once
with its cause: the event-locked playback is broken first, or the queued sendmsg hangup would
wait for the whole file."""

from __future__ import annotations

from pathlib import Path

import gevent
from prometheus_client import CollectorRegistry

from callctl.call.state import CallState
from callctl.config import Config, EslConfig, RouteConfig, RoutingConfig
from callctl.esl.outbound import OutboundServer
from callctl.metrics import Metrics
from callctl.sim.switch import Switch, SwitchConfig

DID = "+15551230000"


def _long_wav(path: Path, seconds: float) -> Path:
    import wave

    import numpy as np

    t = np.arange(int(8000 * seconds)) / 8000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(2 * np.pi * 300 * t) * 6000).astype("<i2").tobytes())
    return path


def test_hangup_during_greeting_is_immediate_with_its_cause(tmp_path: Path) -> None:
    greeting = _long_wav(tmp_path / "long.wav", 20.0)
    cfg = Config(esl=EslConfig(command_timeout_s=3.0, linger_s=3),
                 routes=(RouteConfig(did=DID, flow="x", greeting=str(greeting)),),
                 routing=RoutingConfig(unknown_action="reject"))
    server = OutboundServer(cfg, Metrics(CollectorRegistry()), port=0)
    server.start()
    sw = Switch(SwitchConfig(esl_port=0, event_delay_s=0,
                             dialplan={DID: f"socket 127.0.0.1:{server.port} async full"}))
    sw.start()
    try:
        call = sw.place_call(DID, "+15557654321", "PCMU")
        assert call.wait_answered(5)
        with gevent.Timeout(5):
            while not call.heard():
                gevent.sleep(0.01)
        session = server.registry.get(call.uuid)
        assert session is not None and session.state is CallState.SPEAKING
        asked = gevent.get_hub().loop.now()
        session.request_hangup("USER_BUSY")
        cause = call.wait_hangup(5)
        took = gevent.get_hub().loop.now() - asked
        assert cause == "USER_BUSY"
        assert took < 3.0, f"hangup waited {took:.1f} s behind the playback"
        assert call.heard()[0].interrupted
    finally:
        sw.stop()
        server.stop()
