"""One emulated call rig for the TTS call tests (``from tts_rig import CallRig, wait_for``):
the daemon's real OutboundServer routes a DID to a per-call conversation the test supplies,
the emulated FreeSWITCH (callctl.sim Switch) sends its calls there over loopback, and — with
``forks=True`` — a real ForkServer takes the calls' mod_audio_fork WebSockets. Every
conversation the factory made is kept in ``convs``, in call order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import gevent

from callctl.call.session import CallSession, Conversation
from callctl.config import Config, EslConfig, RouteConfig, RoutingConfig
from callctl.esl.outbound import OutboundServer
from callctl.media.forkserver import ForkServer
from callctl.metrics import Metrics
from callctl.sim.switch import SimCall, Switch, SwitchConfig

C = TypeVar("C", bound=Conversation)
CALLER = "+15557654321"


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``cond`` every 10 ms until it is truthy; gevent.Timeout after ``timeout`` s."""
    with gevent.Timeout(timeout):
        while not cond():
            gevent.sleep(0.01)


class _Closable(Protocol):
    def close(self) -> None: ...


def end_fork_conversation(forks: ForkServer, call_uuid: str, handle: _Closable | None,
                          reader: gevent.Greenlet[Any, Any] | None) -> None:
    """``on_end`` of a conversation that listens on a fork: close its playback handle, stop
    its fork reader greenlet, unregister the call from the ForkServer."""
    if handle is not None:
        handle.close()
    if reader is not None:
        reader.kill()
    forks.unregister(call_uuid)


class CallRig(Generic[C]):
    """OutboundServer + Switch (+ ForkServer). ``make(call, rig)`` builds the conversation of
    each call (``rig.forks`` is ready by then). ``speed`` and ``event_delay_s`` are the
    emulator's. ``close()`` stops everything (the fixture's job)."""

    def __init__(self, metrics: Metrics, did: str, make: Callable[[CallSession, CallRig[C]], C],
                 *, speed: float = 1.0, event_delay_s: float = 0.010,
                 forks: bool = False) -> None:
        self.did = did
        self.convs: list[C] = []
        self.forks: ForkServer | None = None
        if forks:
            self.forks = ForkServer(metrics, port=0)
            self.forks.start()
            host, port = self.forks.address
            self.forks.public_url = f"ws://{host}:{port}"

        def factory(call: CallSession) -> C:
            conv = make(call, self)
            self.convs.append(conv)
            return conv

        cfg = Config(esl=EslConfig(command_timeout_s=2.0, linger_s=5),
                     routes=(RouteConfig(did=did, flow="front_desk"),),
                     routing=RoutingConfig(unknown_action="reject"))
        self.server = OutboundServer(cfg, metrics, conversation_factory=factory, port=0)
        self.server.start()
        self.sw = Switch(SwitchConfig(
            esl_port=0, event_delay_s=event_delay_s, speed=speed,
            # as the shipped dialplan: idle frames (the stream plays into written frames)
            dialplan={did: "set send_silence_when_idle=400; "
                           f"socket 127.0.0.1:{self.server.port} async full"}))
        self.sw.start()

    def call(self, ready: Callable[[SimCall, C], object] = lambda call, conv: True,
             timeout: float = 5.0) -> tuple[SimCall, C]:
        """Place a PCMU call to the DID, wait for the answer, for its conversation and for
        ``ready(call, conv)``; returns both."""
        call = self.sw.place_call(self.did, CALLER, "PCMU")
        assert call.wait_answered(5)
        wait_for(lambda: self.convs and ready(call, self.convs[-1]), timeout)
        return call, self.convs[-1]

    def close(self) -> None:
        self.sw.stop()
        self.server.stop()
        if self.forks is not None:
            self.forks.stop()
