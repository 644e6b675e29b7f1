"""G.711 must be bit-exact with the reference coder (Python 3.11's audioop implements it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callctl.sim import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    assert g711.ulaw_encode(ALL_SAMPLES).tobytes() == audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    assert g711.alaw_encode(ALL_SAMPLES).tobytes() == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


def test_decoders_match_reference_for_every_code() -> None:
    assert g711.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_known_itu_values() -> None:
    # Silence codes and the extremes from the G.711 tables.
    assert g711.ulaw_encode(np.array([0], np.int16))[0] == 0xFF
    assert g711.alaw_encode(np.array([0], np.int16))[0] == 0xD5
    assert list(g711.ulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F]))) == [-32124, 32124, 0, 0]
    assert list(g711.alaw_decode(bytes([0x55, 0xD5, 0x2A, 0xAA]))) == [-8, 8, -32256, 32256]


@given(st.lists(st.integers(-32768, 32767), max_size=200), st.sampled_from(["PCMU", "PCMA"]))
def test_phone_line_is_idempotent_and_close(values: list[int], codec: str) -> None:
    x = np.array(values, dtype=np.int16)
    once = g711.phone_line(x, codec)
    assert np.array_equal(g711.phone_line(once, codec), once)
    # Quantisation error of a log coder stays under ~1/16 of the magnitude (+ small floor).
    err = np.abs(once.astype(np.int32) - x.astype(np.int32))
    assert np.all(err <= np.abs(x.astype(np.int32)) // 15 + 16)


def test_bad_input_is_refused() -> None:
    with pytest.raises(TypeError):
        g711.ulaw_encode(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"unknown G\.711 codec"):
        g711.encode(np.zeros(4, dtype=np.int16), "G729")
