"""Spoken-language normalization for dialog input: numbers and digits, yes/no, light dates.

How this works: text is lower-cased and split into word tokens (``tokens``). ``digits``
walks the tokens with a tiny number grammar: single digits concatenate ("four five" → "45"),
"double"/"triple" repeat the next digit, tens take a following unit ("twenty three" → "23"),
"hundred"/"thousand" multiply. Words that are not numbers are skipped, so "my number is
four five" gives "45". ``yes_no`` looks for negations first ("not right", "nope"), then
affirmations. Everything is pure and fast (used on the speculative path); nothing raises on
any string input.
"""

from __future__ import annotations

import datetime as dt
import re

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")   # letters of any script (Korean flows too)

UNITS = {
    "zero": 0, "oh": 0, "o": 0, "nought": 0, "nil": 0, "one": 1, "two": 2, "three": 3,
    "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}
REPEAT = {"double": 2, "triple": 3}

#: Words a digits-only recognizer grammar needs (Vosk runtime grammar).
NUMBER_WORDS: tuple[str, ...] = (
    *[w for w in UNITS if w not in ("o", "nil")], *TEENS, *[w for w in TENS if w != "fourty"],
    "hundred", "thousand", "double", "triple",
)

YES_PHRASES = (
    "yes", "yeah", "yea", "yep", "yup", "ya", "sure", "correct", "right", "that's right",
    "affirmative", "absolutely", "ok", "okay", "of course", "definitely", "confirm",
    "uh huh", "exactly", "indeed", "please do", "go ahead", "true",
)
NO_PHRASES = (
    "no", "nope", "nah", "not", "incorrect", "wrong", "negative", "don't", "do not",
    "never", "cancel", "false",
)

#: Words a yes/no recognizer grammar needs.
YES_NO_WORDS: tuple[str, ...] = (
    "yes", "yeah", "yep", "sure", "correct", "right", "okay", "no", "nope", "not", "wrong",
    "that's right", "that's wrong", "incorrect",
)


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; hyphens and punctuation separate words."""
    return _TOKEN.findall(text.lower().replace("-", " "))


def normalize_text(text: str) -> str:
    """Lower-case, punctuation removed, single spaces: the form intents are matched on."""
    return " ".join(tokens(text))


def digits(text: str) -> str | None:
    """The digit string spoken in ``text``, or None if it contains no number at all.

    "four five six seven" → "4567", "double five" → "55", "oh" → "0", "twenty three" → "23",
    "nineteen eighty four" → "1984", "five hundred and twelve" → "512", "4 5 6" → "456".
    """
    out: list[str] = []
    cur: int | None = None       # number being built
    kind = ""                    # "unit", "teen", "tens", "hundreds", "thousands"
    repeat = 1

    def flush() -> None:
        nonlocal cur, kind
        if cur is not None:
            out.append(str(cur))
        cur, kind = None, ""

    for tok in tokens(text):
        if tok in REPEAT:
            flush()
            repeat = REPEAT[tok]
            continue
        if tok.isascii() and tok.isdigit():
            flush()
            out.append(tok * repeat if len(tok) == 1 else tok)
            repeat = 1
            continue
        if tok in UNITS:
            v = UNITS[tok]
            if repeat > 1:
                flush()
                out.append(str(v) * repeat)
                repeat = 1
                continue
            if cur is not None and v and (
                (kind == "tens")
                or (kind in ("hundreds", "thousands") and cur % 100 == 0)
            ):
                cur += v
                kind = "unit"
                continue
            flush()
            cur, kind = v, "unit"
            continue
        repeat = 1
        if tok in TEENS or tok in TENS:
            v, k = (TEENS[tok], "teen") if tok in TEENS else (TENS[tok], "tens")
            if cur is not None and kind in ("hundreds", "thousands") and cur % 100 == 0:
                cur, kind = cur + v, k
            else:
                flush()
                cur, kind = v, k
            continue
        if tok == "hundred":
            if cur is not None and kind == "unit" and 1 <= cur <= 9:
                cur, kind = cur * 100, "hundreds"
            elif cur is not None and kind == "thousands" and cur % 1000 == 0:
                cur, kind = cur + 100, "hundreds"
            else:
                flush()
                cur, kind = 100, "hundreds"
            continue
        if tok == "thousand":
            if cur is not None and kind in ("unit", "teen", "tens", "hundreds") and cur < 1000:
                cur, kind = cur * 1000, "thousands"
            else:
                flush()
                cur, kind = 1000, "thousands"
            continue
        if tok == "and" and kind in ("hundreds", "thousands"):
            continue
        flush()
    flush()
    result = "".join(out)
    return result or None


def _has_phrase(words: list[str], phrase: str) -> list[int]:
    """Indexes where the word sequence ``phrase`` starts in ``words``."""
    p = phrase.split()
    return [i for i in range(len(words) - len(p) + 1) if words[i:i + len(p)] == p]


def yes_no(text: str) -> bool | None:
    """True for an affirmation, False for a negation, None when neither or both.

    "yeah", "yep", "sure", "that's right" → True; "no", "nope", "that's not right",
    "not correct" → False; "yes no" → None.
    """
    words = tokens(text)
    neg = any(_has_phrase(words, p) for p in NO_PHRASES)
    pos = False
    for p in YES_PHRASES:
        for i in _has_phrase(words, p):
            before = words[max(0, i - 2):i]
            if not any(b in ("not", "no", "don't", "isn't", "never") for b in before):
                pos = True
    if neg and not pos:
        return False
    if pos and not neg:
        return True
    return None


_MONTHS = {
    m: i + 1 for i, m in enumerate(
        ["january", "february", "march", "april", "may", "june", "july", "august",
         "september", "october", "november", "december"])
}
_MONTHS.update({k[:3]: v for k, v in list(_MONTHS.items())})
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")


def _day_of_month(words: list[str]) -> int | None:
    for i, w in enumerate(words):
        m = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?", w)
        if m:
            return int(m.group(1))
        if w in _ORDINALS:
            day = _ORDINALS[w]
            if w in ("twentieth", "thirtieth"):
                return day
            if i > 0 and words[i - 1] in TENS:
                return TENS[words[i - 1]] + day
            return day
    return None


def date(text: str, today: dt.date) -> dt.date | None:
    """A calendar date spoken in ``text`` relative to ``today``, or None (light parser).

    Understands "today", "tomorrow", "day after tomorrow", weekday names (the next such day,
    "next monday" likewise), "march fifth", "the 5th of march", "twenty first of june" and
    ISO "2026-03-05". A month/day without a year is the next such date from ``today`` on.
    """
    iso = _ISO.search(text)
    if iso:
        try:
            return dt.date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        except ValueError:
            return None
    words = tokens(text)
    joined = " ".join(words)
    if "day after tomorrow" in joined:
        return today + dt.timedelta(days=2)
    if "tomorrow" in words:
        return today + dt.timedelta(days=1)
    if "today" in words:
        return today
    for i, name in enumerate(_WEEKDAYS):
        if name in words:
            ahead = (i - today.weekday()) % 7 or 7
            return today + dt.timedelta(days=ahead)
    month = next((_MONTHS[w] for w in words if w in _MONTHS), None)
    if month is None:
        return None
    day = _day_of_month(words)
    if day is None:
        return None
    for year in (today.year, today.year + 1):
        try:
            d = dt.date(year, month, day)
        except ValueError:
            return None
        if d >= today:
            return d
    return None


__all__ = ["NUMBER_WORDS", "YES_NO_WORDS", "date", "digits", "normalize_text", "tokens",
           "yes_no"]
