"""Priming: each pooled recognizer decodes real speech once (serially, out of the pool), so a
caller's first turn does not pay a fresh recognizer's first-utterance cost."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest
from prometheus_client import CollectorRegistry

from callctl.asr.vosk import VoskEngine
from callctl.metrics import Metrics
from callctl.sim import corpus


@pytest.fixture(scope="module")
def engine() -> Iterator[VoskEngine]:
    """One model load for the module; each test starts from a pool of fresh recognizers."""
    yield VoskEngine(Metrics(CollectorRegistry()), pool_size=2)


@pytest.fixture(autouse=True)
def cold_pool(engine: VoskEngine) -> None:
    engine._pool.clear()
    engine.warm(2)


def _pcm(text: str) -> bytes:
    return bytes(corpus.utterance(text, voice="espeak").samples.astype("<i2").tobytes())


def test_prime_decodes_each_cold_recognizer_once_and_keeps_it_usable(engine: VoskEngine) -> None:
    assert [r.decoded_once for r in engine._pool] == [False, False]
    pcm = _pcm("I would like to talk to billing please.")
    assert engine.prime(pcm) == 2
    assert len(engine._pool) == 2 and all(r.decoded_once for r in engine._pool)
    assert engine.prime(pcm) == 0                 # nothing cold is left: no work
    rec = engine.acquire()
    try:                                          # reset: the next utterance starts clean
        for i in range(0, len(pcm), 3200):
            rec.accept(pcm[i:i + 3200])
        out = rec.final()
        assert out.text and out.words[0].start < 1.5
    finally:
        engine.release(rec)


def test_a_recognizer_being_primed_is_never_handed_to_a_call(engine: VoskEngine) -> None:
    cold = list(engine._pool)
    primer = gevent.spawn(engine.prime, _pcm("Please check my last bill."))
    gevent.sleep(0)                               # the primer took its first recognizer
    taken = engine.acquire()
    in_flight = [r for r in cold if r not in engine._pool and r is not taken]
    assert len(in_flight) == 1 and taken is not in_flight[0]
    engine.release(taken)
    primer.join(timeout=60)
    assert primer.successful()
    assert len(engine._pool) == 2


def test_prime_with_nothing_pooled_is_harmless(engine: VoskEngine) -> None:
    engine._pool.clear()
    assert engine.prime(b"\x00\x00" * 8000) == 0
