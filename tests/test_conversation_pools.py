"""Per-call resources the ``Voice`` keeps warm: a Silero VAD is taken from a pool when a call
is answered (never built on the hub) and given back, reset, when the call ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gevent
from conversation_rig import Rig

from callctl import config
from callctl.sim import callers


def test_vad_pool_reuses_one_vad_across_two_calls(tmp_path: Path, redis_url: str,
                                                  vosk_engine: Any) -> None:
    rig = Rig(tmp_path, redis_url, vosk_engine, daemon=config.DaemonConfig(max_calls=1))
    gaps: list[float] = []

    def ticker() -> None:
        last = time.monotonic()
        while True:
            gevent.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    seen: list[int] = []
    real_acquire = rig.voice.acquire_vad

    def acquire() -> Any:
        vad = real_acquire()
        seen.append(id(vad))
        return vad

    rig.voice.acquire_vad = acquire  # type: ignore[method-assign]
    try:
        assert rig.voice.vads_created == 1          # warmed at start-up: min(max_calls, 16)
        tick = gevent.spawn(ticker)
        for _ in range(2):
            call, _ = rig.call([callers.pause(0.5), callers.hangup()])
            rig.finish(call)
        tick.kill()
    finally:
        rig.close()
    assert len(seen) == 2 and seen[0] == seen[1], seen     # the same VAD served both calls
    assert rig.voice.vads_created == 1 and rig.voice.vads_reused == 2
    assert len(rig.voice._vads) == 1 and not rig.voice._vads[0].speaking
    print(f"longest hub gap while answering: {max(gaps) * 1000:.0f} ms")
