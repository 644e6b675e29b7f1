"""A recognizer that hangs costs one turn, not the call: the listener takes a fresh one from
its engine for the next utterance (real Vosk, real WebSocket fork)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import numpy as np
import pytest

from callctl.asr.vosk import VoskEngine
from callctl.call.timeline import Turn
from callctl.media.forkserver import ForkServer
from callctl.media.listener import AsrRecovered, Listener
from callctl.media.vad import Vad
from callctl.sim.corpus import utterance
from callctl.turns import AsrFailed, EndpointPolicy, TurnCommitted

UUID = "5d3a1f0e-bbbb-4c55-9e0b-0d3c6a1f22e2"


class HangsOnce:
    """A recognizer whose decoder hangs (fault injection; runs in a threadpool thread)."""

    engine = "hung"
    sample_rate = 8000

    def accept(self, pcm: bytes) -> str | None:
        time.sleep(3.0)
        return None

    def final(self) -> Any:
        time.sleep(3.0)
        raise RuntimeError("unreachable")

    def reset(self) -> None:
        pass

    def set_grammar(self, phrases: Any) -> None:
        return None


@pytest.mark.slow
def test_hung_recognizer_is_replaced_for_the_next_turn(fork_server: ForkServer,
                                                      fork_client: Callable,
                                                      vosk_engine: VoskEngine) -> None:
    url, inbox = fork_server.register(UUID)
    events: list[Any] = []
    turns = iter(range(100))
    hung = HangsOnce()
    lst = Listener(inbox, hung, Vad(8000), EndpointPolicy(), events.append,  # type: ignore[arg-type]
                   lambda: Turn(next(turns)), decode_timeout_s=1.0, engine=vosk_engine)
    g = gevent.spawn(lst.run)

    def committed() -> list[TurnCommitted]:
        return [e for e in events if isinstance(e, TurnCommitted)]

    try:
        c = fork_client(url)
        c.connect()
        c.text("{}")
        for n, text in enumerate(["Yes.", "I'd like to talk to billing."], start=1):
            c.stream(utterance(text).samples, realtime=True)
            c.stream(np.zeros(8000, dtype=np.int16), realtime=True)
            deadline = time.monotonic() + 10
            while len(committed()) < n and time.monotonic() < deadline:
                gevent.sleep(0.05)
    finally:
        lst.stop()
        g.join(timeout=3)
        fork_server.unregister(UUID)
    assert g.dead and g.exception is None
    assert sum(isinstance(e, AsrFailed) for e in events) == 1, events
    assert sum(isinstance(e, AsrRecovered) for e in events) == 1
    first, second = committed()[:2]
    assert first.text == ""                            # the hung turn is lost ...
    assert second.text, second                          # ... the next one is heard
    assert lst.recognizer is not hung
    assert lst.release(vosk_engine) is True             # the fresh one is healthy: pooled
