"""Per-call resources the ``Voice`` keeps warm: a Silero VAD is taken from a pool when a call
is answered (never built on the hub) and given back, reset, when the call ends."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
from conversation_rig import HttpRecorder, Rig
from gevent.threadpool import ThreadPool
from prometheus_client import CollectorRegistry

from callctl import config
from callctl.daemon import size_threadpool
from callctl.dialog.base import Webhook
from callctl.dialog.webhook import WEBHOOK_THREADS, post_webhook
from callctl.log import get_logger
from callctl.metrics import Metrics
from callctl.sim import callers
from callctl.voice import PLAYBACK_STALE_S, Voice, sweep_playback_dir


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


@pytest.mark.slow
def test_slow_webhooks_leave_the_hub_threadpool_to_asr() -> None:
    """Webhooks run in their own threads: with every webhook thread stuck on a slow server,
    the hub's threadpool (ASR decodes, TTS) still runs work at once."""
    hub_pool = gevent.get_hub().threadpool
    before = hub_pool.maxsize
    server = HttpRecorder(delay_s=3.0)
    pool = ThreadPool(WEBHOOK_THREADS)
    log = get_logger(component="test")
    try:
        size_threadpool(1)                        # one hub thread: a webhook in it would block
        assert hub_pool.maxsize == 1
        posts = [gevent.spawn(post_webhook, Webhook(server.url, {"n": n}, 4000), "u", log,
                              pool) for n in range(WEBHOOK_THREADS + 2)]
        with gevent.Timeout(5):                   # (the server runs in a real thread)
            while not server.got.is_set():
                gevent.sleep(0.02)
        with gevent.Timeout(2.0):                 # the webhooks take 3 s each
            assert hub_pool.apply(lambda: 42) == 42
        gevent.joinall(posts, timeout=10)
        assert len(server.bodies) == WEBHOOK_THREADS + 2
    finally:
        hub_pool.maxsize = before
        pool.kill()
        server.close()
    assert size_threadpool(0) == max(10, 2 * (os.cpu_count() or 1) + 4)
    hub_pool.maxsize = before


def test_start_sweeps_playback_files_left_by_a_crash(tmp_path: Path, redis_url: str,
                                                     vosk_engine: Any) -> None:
    root = tmp_path / "playback"
    (root / "ab").mkdir(parents=True)
    stale = root / "ab" / "old-reply.wav"
    torn = root / "ab" / ".tmp-x1y2.wav"
    fresh = root / "ab" / "live-reply.wav"
    for p in (stale, torn, fresh):
        p.write_bytes(b"RIFF")
    old = time.time() - PLAYBACK_STALE_S - 60
    os.utime(stale, (old, old))
    rig = Rig(tmp_path, redis_url, vosk_engine)      # Voice.start() runs in the daemon
    rig.close()
    assert not stale.exists() and not torn.exists()
    assert fresh.exists()                             # a recent file is left alone
    assert sweep_playback_dir(tmp_path / "no-such-dir") == 0


def test_voice_primes_cold_pooled_recognizers_in_the_background(tmp_path: Path, redis_url: str,
                                                                 vosk_engine: Any) -> None:
    vosk_engine._pool.clear()
    vosk_engine.warm(2)                           # two recognizers that never decoded
    rig = Rig(tmp_path, redis_url, vosk_engine)
    try:
        assert rig.voice.ready()                  # READY does not wait for priming
        assert rig.voice._vads and all(v.hang_ms == 64 for v in rig.voice._vads)  # vosk
        assert rig.voice.wait_primed(90)
        assert rig.sample("callctl_asr_recognizers_primed_total", {"engine": "vosk"}) == 2
        assert len(vosk_engine._pool) == 2 and all(r.decoded_once for r in vosk_engine._pool)
        call, _ = rig.call([callers.pause(0.3), callers.hangup()])
        assert rig.finish(call) is not None
    finally:
        rig.close()


def test_closing_while_priming_and_prime_off(tmp_path: Path, redis_url: str,
                                             vosk_engine: Any) -> None:
    vosk_engine._pool.clear()
    vosk_engine.warm(2)
    rig = Rig(tmp_path / "a", redis_url, vosk_engine)
    rig.close()                                   # at once: the primer may be mid-decode
    assert rig.voice._primer is not None and rig.voice.wait_primed(0)   # killed by close
    # the recognizer in flight (if any) is dropped; what is pooled was never used by two
    assert len(vosk_engine._pool) <= 2
    vosk_engine._pool.clear()
    vosk_engine.warm(1)
    cfg = config.Config(
        media=config.MediaConfig(listen_port=0),
        asr=dataclasses.replace(config.AsrConfig(), prime=False),
        tts=config.TtsConfig(engine="espeak", fallback_engine="none",
                             cache_dir=str(tmp_path / "cache")),
        playback=config.PlaybackConfig(dir=str(tmp_path / "playback")))
    off = Voice(cfg, Metrics(CollectorRegistry()), asr=vosk_engine)
    off.start()
    try:
        assert off.ready() and off._primer is None and off.wait_primed(0)
        assert not vosk_engine._pool[0].decoded_once
    finally:
        off.close()


def test_a_turns_end_decodes_take_urgent_slots(tmp_path: Path, redis_url: str,
                                               vosk_engine: Any) -> None:
    """The decode that ends the caller's speech and the final go through the daemon's decode
    scheduler as URGENT; streaming catch-up as ROUTINE (``callctl.asr.scheduler``)."""
    rig = Rig(tmp_path, redis_url, vosk_engine)
    try:
        assert rig.voice.decoder.slots >= 1
        call, _ = rig.call([callers.wait_answer(), callers.wait_for_bot(silence_s=0.6),
                            callers.say("I would like to talk to billing please.", voice="espeak"),
                            callers.wait_for_bot(silence_s=0.6), callers.hangup()])
        rig.finish(call)
    finally:
        rig.close()
    count = "callctl_asr_decode_wait_seconds_count"
    # the final always; the decode just before the speech end too when frames were left
    assert rig.sample(count, {"priority": "urgent"}) >= 1
    assert rig.sample(count, {"priority": "routine"}) >= 1
    assert rig.voice.decoder.busy == 0 and not rig.voice.decoder._waiting
