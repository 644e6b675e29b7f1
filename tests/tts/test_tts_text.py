"""Reply text cleanup and sentence splitting (callctl.tts.base)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callctl.tts.base import (
    FIRST_PIECE_CHARS,
    MAX_CHARS,
    PIECE_CHARS,
    AudioChunk,
    Cancelled,
    CancelToken,
    clean_text,
    read_wav,
    split_sentences,
    write_wav_atomic,
)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


@pytest.mark.parametrize("text", ["", "   ", "...", "?!", "\n\t", "<break time='1s'/>",
                                  "\U0001F600\U0001F44D", "<speak></speak>"])
def test_empty_or_unspeakable_text_cleans_to_nothing(text: str) -> None:
    assert clean_text(text) == ""
    assert split_sentences(clean_text(text)) == []


def test_ssml_tags_are_stripped_not_spoken() -> None:
    ssml = ('<speak><prosody rate="slow">Your balance is</prosody> <say-as '
            'interpret-as="cardinal">42</say-as> dollars.<break time="500ms"/>Goodbye.</speak>')
    out = clean_text(ssml)
    assert out == "Your balance is 42 dollars. Goodbye."
    for tag_word in ("speak", "prosody", "rate", "interpret", "cardinal", "break", "500ms"):
        assert tag_word not in out


def test_html_entities_and_lone_angle_brackets() -> None:
    assert clean_text("Tom &amp; Jerry") == "Tom & Jerry"
    assert clean_text("if a < b then") == "if a b then"


def test_non_ascii_typography_becomes_ascii_letters_are_kept() -> None:
    out = clean_text("It\u2019s \u201cfine\u201d \u2014 caf\u00e9 costs \u20ac5\u2026 \U0001F600")
    assert out == "It's \"fine\", café costs €5."
    assert "\U0001F600" not in out


def test_very_long_text_is_capped_at_a_sentence_and_logged(capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    text = "This is one sentence of a very long reply. " * 100
    out = clean_text(text)
    assert len(out) <= MAX_CHARS
    assert out.endswith(".")
    assert "tts_text_truncated" in capsys.readouterr().out


def test_one_huge_word_is_cut_hard() -> None:
    pieces = split_sentences(clean_text("x" * 5000))
    assert all(len(p) <= FIRST_PIECE_CHARS or len(p) <= PIECE_CHARS for p in pieces)
    assert sum(map(len, pieces)) == MAX_CHARS


def test_first_piece_is_short_and_cut_at_a_comma() -> None:
    text = ("Thanks for calling the Acme support line, my name is Joe, and I will be "
            "helping you today with whatever you need. Second sentence here! Third?")
    pieces = split_sentences(text)
    assert pieces[0] == "Thanks for calling the Acme support line, my name is Joe,"
    assert len(pieces[0]) <= FIRST_PIECE_CHARS
    assert pieces[1:] == ["and I will be helping you today with whatever you need.",
                          "Second sentence here!", "Third?"]


def test_long_later_sentence_is_cut_at_commas() -> None:
    long = ", ".join([f"this is clause number {i} of a long sentence" for i in range(12)])
    pieces = split_sentences("Hi. " + long + ".")
    assert pieces[0] == "Hi."
    assert len(pieces) > 2
    assert all(len(p) <= PIECE_CHARS for p in pieces)


def test_stray_punctuation_joins_its_neighbour() -> None:
    assert split_sentences("Hello. !! World.") == ["Hello.!!", "World."]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=600))
def test_cleanup_and_split_never_fail_and_never_lose_words(text: str) -> None:
    cleaned = clean_text(text)
    pieces = split_sentences(cleaned)
    assert words(" ".join(pieces)) == words(cleaned)
    assert all(p.strip() for p in pieces)


def test_audio_chunk_is_frozen_and_checked() -> None:
    chunk = AudioChunk(pcm=b"\x00\x01" * 80, rate=8000, text="x")
    assert chunk.duration_s == pytest.approx(0.01)
    assert len(chunk.samples) == 80
    with pytest.raises(AttributeError):
        chunk.rate = 16000  # type: ignore[misc]
    with pytest.raises(ValueError):
        AudioChunk(pcm=b"\x00", rate=8000)
    with pytest.raises(ValueError):
        AudioChunk(pcm=b"", rate=0)


def test_cancel_token() -> None:
    token = CancelToken()
    token.raise_if_cancelled()
    token.cancel()
    assert token.cancelled
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()


def test_wav_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    write_wav_atomic(path, b"\x01\x00" * 100, 16000)
    assert read_wav(path) == (b"\x01\x00" * 100, 16000)
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]
    assert path.stat().st_mode & 0o777 == 0o640
