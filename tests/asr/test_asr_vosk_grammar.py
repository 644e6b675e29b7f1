"""Vosk runtime grammar (flow nodes with expected phrases) on the real Korean model."""

from __future__ import annotations

from typing import Any

from callctl.asr.whisper import WhisperRecognizer
from callctl.sim.corpus import utterance

YES_NO = ["네", "아니요"]


def _decode(rec: Any, text: str) -> str:
    data = utterance(text).samples.astype("<i2").tobytes()
    for off in range(0, len(data), 3200):
        rec.accept(data[off:off + 3200])
    return str(rec.final().text)


def test_grammar_restricts_the_next_utterance_to_its_words(vosk_engine: Any) -> None:
    rec = vosk_engine.acquire()
    try:
        speech = "I need to book an appointment for next Tuesday."
        open_text = _decode(rec, speech)
        assert len(open_text.split()) >= 3                  # open vocabulary: many words
        assert rec.set_grammar(YES_NO) == tuple(YES_NO)
        restricted = _decode(rec, speech)
        allowed = {w for p in YES_NO for w in p.split()} | {"[unk]"}
        assert restricted.split() and set(restricted.split()) <= allowed, restricted
        assert rec.grammar == tuple(YES_NO)
        assert rec.set_grammar(None) is None                 # back to open vocabulary
        assert len(_decode(rec, speech).split()) >= 3
    finally:
        vosk_engine.release(rec)


def test_unknown_words_are_dropped_and_all_unknown_means_open(vosk_engine: Any) -> None:
    rec = vosk_engine.acquire()
    try:
        # English phrases on the Korean model: nothing usable -> open vocabulary, no crash
        assert rec.set_grammar(["billing", "technical support"]) is None
        assert rec.set_grammar(["billing", "네", "  네 ", "[unk]"]) == ("네",)
    finally:
        vosk_engine.release(rec)


def test_grammar_waits_for_the_utterance_boundary(vosk_engine: Any) -> None:
    rec = vosk_engine.acquire()
    try:
        data = utterance("I need to book an appointment.").samples.astype("<i2").tobytes()
        rec.accept(data[:3200])
        rec.set_grammar(YES_NO)                # mid-utterance: applies to the next one
        for off in range(3200, len(data), 3200):
            rec.accept(data[off:off + 3200])
        assert rec.grammar is None
        assert len(rec.final().text.split()) >= 2
        rec.accept(data[:3200])
        assert rec.grammar == tuple(YES_NO)
    finally:
        vosk_engine.release(rec)


def test_released_recognizer_comes_back_open(vosk_engine: Any) -> None:
    rec = vosk_engine.acquire()
    rec.set_grammar(YES_NO)
    vosk_engine.release(rec)
    again = vosk_engine.acquire()
    try:
        assert len(_decode(again, "I need to book an appointment for next Tuesday.").split()) >= 3
    finally:
        vosk_engine.release(again)


def test_whisper_ignores_grammar(whisper_engine: Any) -> None:
    rec = whisper_engine.acquire()
    assert isinstance(rec, WhisperRecognizer)
    assert rec.set_grammar(YES_NO) is None
    whisper_engine.release(rec)
