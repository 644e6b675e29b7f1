"""Priming: every pooled recognizer decodes real speech once at start-up, so a caller's first
turn does not pay a fresh recognizer's first-utterance cost."""

from __future__ import annotations

from typing import Any

from callctl.sim import corpus


def test_prime_decodes_through_every_pooled_recognizer(vosk_engine: Any) -> None:
    vosk_engine.warm(2)
    pooled = list(vosk_engine._pool)
    assert len(pooled) >= 2
    utt = corpus.utterance("I would like to talk to billing please.", voice="espeak")
    assert vosk_engine.prime(utt.samples.astype("<i2").tobytes()) == len(pooled)
    # primed recognizers are reset: the next utterance starts clean and still recognizes
    rec = vosk_engine.acquire()
    try:
        pcm = utt.samples.astype("<i2").tobytes()
        for i in range(0, len(pcm), 3200):
            rec.accept(pcm[i:i + 3200])
        assert rec.final().text
    finally:
        vosk_engine.release(rec)


def test_prime_with_nothing_pooled_is_harmless(vosk_engine: Any) -> None:
    saved = list(vosk_engine._pool)
    vosk_engine._pool.clear()
    try:
        assert vosk_engine.prime(b"\x00\x00" * 8000) == 0
    finally:
        vosk_engine._pool.extend(saved)
