"""Normalization tables: spoken numbers → digits, yes/no, light dates."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callctl.dialog import normalize


@pytest.mark.parametrize(("spoken", "want"), [
    ("four five six seven", "4567"),
    ("double five", "55"),
    ("triple seven one", "7771"),
    ("oh", "0"),
    ("zero oh one", "001"),
    ("twenty three", "23"),
    ("twenty-three", "23"),
    ("twenty", "20"),
    ("nineteen eighty four", "1984"),
    ("one hundred", "100"),
    ("five hundred and twelve", "512"),
    ("two thousand and five", "2005"),
    ("my account number is one two three four", "1234"),
    ("4 5 6 7", "4567"),
    ("4567", "4567"),
    ("double 5", "55"),
    ("uh four five um six", "456"),
    ("one two three four five six seven eight", "12345678"),
    ("Four, five. Six!", "456"),
    ("hello there", None),
    ("", None),
])
def test_digits(spoken: str, want: str | None) -> None:
    assert normalize.digits(spoken) == want


@pytest.mark.parametrize(("spoken", "want"), [
    ("yes", True), ("Yeah.", True), ("yep", True), ("yup", True), ("sure", True),
    ("that's right", True), ("correct", True), ("okay", True), ("uh huh", True),
    ("absolutely", True), ("yes please", True),
    ("no", False), ("Nope.", False), ("nah", False), ("that's not right", False),
    ("not correct", False), ("wrong", False), ("no thanks", False), ("incorrect", False),
    ("yes no", None), ("maybe", None), ("", None), ("billing", None),
])
def test_yes_no(spoken: str, want: bool | None) -> None:
    assert normalize.yes_no(spoken) is want


TODAY = dt.date(2026, 11, 26)   # a Thursday


@pytest.mark.parametrize(("spoken", "want"), [
    ("today", TODAY),
    ("tomorrow please", dt.date(2026, 11, 27)),
    ("the day after tomorrow", dt.date(2026, 11, 28)),
    ("monday", dt.date(2026, 11, 30)),
    ("next thursday", dt.date(2026, 12, 3)),
    ("december fifth", dt.date(2026, 12, 5)),
    ("the 5th of march", dt.date(2027, 3, 5)),
    ("june twenty first", dt.date(2027, 6, 21)),
    ("2026-12-24", dt.date(2026, 12, 24)),
    ("february thirtieth", None),
    ("2026-13-01", None),
    ("whenever", None),
])
def test_date(spoken: str, want: dt.date | None) -> None:
    assert normalize.date(spoken, TODAY) == want


def test_normalize_text() -> None:
    assert normalize.normalize_text("  Technical-Support, PLEASE! ") == "technical support please"


@given(st.text(max_size=200))
def test_never_raises(text: str) -> None:
    d = normalize.digits(text)
    assert d is None or (d.isdigit() and d.isascii())
    assert normalize.yes_no(text) in (True, False, None)
    normalize.date(text, TODAY)
