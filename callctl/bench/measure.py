"""Measure what the caller experienced, from the emulator's timelines. Pure functions, no I/O.

Inputs are what the caller said (``Spoken``: speech start/end on the monotonic clock and what
kind of speech it was) and what the caller heard (``callctl.sim.interfaces.Heard`` records).

- turn latency: for each ``utterance``, the first heard audio starting at or after its speech
  end, minus that speech end. None (a missed turn) if nothing started within ``reply_window``.
- barge-in latency: for each ``bargein``, the bot audio playing at its speech start that was
  interrupted; latency = that audio's end minus the speech start.
- false barge-in: a ``backchannel`` or ``noise`` during bot audio that interrupted it.
- barge-in pause (pause-then-decide): a ``backchannel`` or ``noise`` during bot audio that
  paused it and was not cut (the audio continued): the caller heard the bot hesitate. Its
  duration is the pause → the same audio audible again. A stretch that continues a paused
  one is not a new reply (turn latency skips it); a paused stretch later cut counts as
  interrupted, its end (the pause) is when the caller heard the bot stop.
- premature reply: bot audio that STARTS while the caller is still inside an ``utterance`` or
  ``bargein`` (after its speech start, before its speech end), e.g. inside a comma or a
  mid-sentence pause: the bot answered half a sentence. Counted once per utterance, per
  ``scenario`` (``plain``, ``comma``, ``pause``, ``bargein``); a stretch that continues a
  paused one is not a new reply. Where the start falls inside one of the utterance's known
  pauses (``Spoken.gaps``), how far into the pause it came is kept too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from callctl.sim.interfaces import Heard

Kind = Literal["utterance", "bargein", "backchannel", "noise", "dtmf"]


@dataclass(frozen=True)
class Spoken:
    """One thing the caller said. ``scenario`` names the utterance's shape (``plain``,
    ``comma``, ``pause``; empty: ``plain``, or ``bargein`` for a barge-in); ``gaps`` are the
    silences inside it (absolute monotonic start, end), where it has any."""

    speech_start: float
    speech_end: float
    kind: Kind
    text: str = ""
    scenario: str = ""
    gaps: tuple[tuple[float, float], ...] = ()

    @property
    def scenario_name(self) -> str:
        return self.scenario or ("bargein" if self.kind == "bargein" else "plain")


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None
    n: int

    def as_ms(self) -> dict[str, float | int | None]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 1)

        return {"p50": ms(self.p50), "p95": ms(self.p95), "p99": ms(self.p99), "n": self.n}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> Percentiles:
    return Percentiles(percentile(values, 50), percentile(values, 95), percentile(values, 99),
                       len(values))


def _playing_at(heard: Iterable[Heard], t: float) -> Heard | None:
    for h in heard:
        if h.start <= t < h.end:
            return h
    return None


def turn_latencies(spoken: Sequence[Spoken], heard: Sequence[Heard],
                   reply_window: float = 5.0) -> tuple[list[float], int]:
    """(latencies in s of answered utterances, number of utterances with no reply in time).
    Audio that starts once the caller's next utterance has begun is not a reply to this one."""
    out: list[float] = []
    missed = 0
    cont = {id(h) for h in _continuations(heard).values()}
    starts = sorted(h.start for h in heard if id(h) not in cont)
    turns = sorted((s for s in spoken if s.kind == "utterance"), key=lambda s: s.speech_start)
    for n, s in enumerate(turns):
        limit = turns[n + 1].speech_start if n + 1 < len(turns) else math.inf
        nxt = next((t for t in starts if t >= s.speech_end), None)
        if nxt is None or nxt - s.speech_end > reply_window or nxt >= limit:
            missed += 1
        else:
            out.append(nxt - s.speech_end)
    return out, missed


def bargein_latencies(spoken: Sequence[Spoken], heard: Sequence[Heard]) -> tuple[list[float], int]:
    """(latencies of barge-ins that stopped the bot, barge-ins during bot audio it ignored)."""
    out: list[float] = []
    ignored = 0
    for s in spoken:
        if s.kind != "bargein":
            continue
        h = _playing_at(heard, s.speech_start)
        if h is None:
            continue
        if h.interrupted:
            out.append(max(0.0, h.end - s.speech_start))
        else:
            ignored += 1
    return out, ignored


FALSE_BARGEIN_KINDS: tuple[Kind, ...] = ("backchannel", "noise")


def false_bargeins(spoken: Sequence[Spoken], heard: Sequence[Heard]
                   ) -> dict[Kind, tuple[int, int]]:
    """Per kind in ``FALSE_BARGEIN_KINDS`` (always both keys): (how many of those said or
    made during bot audio stopped it, how many were during bot audio). Stopped = the bot
    audio playing at the event's start was interrupted and ended no later than 1 s after the
    event's end (a later cut belongs to something else)."""
    out: dict[Kind, tuple[int, int]] = {k: (0, 0) for k in FALSE_BARGEIN_KINDS}
    for s in spoken:
        if s.kind not in out:
            continue
        h = _playing_at(heard, s.speech_start)
        if h is None:
            continue
        hits, n = out[s.kind]
        out[s.kind] = (hits + int(h.interrupted and h.end <= s.speech_end + 1.0), n + 1)
    return out


def false_bargein_rate(spoken: Sequence[Spoken], heard: Sequence[Heard]) -> tuple[float, int]:
    """(share of backchannels and noise during bot audio that interrupted it, how many
    there were), both kinds together (``false_bargeins`` splits them)."""
    counts = false_bargeins(spoken, heard).values()
    hits, n = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return (hits / n if n else 0.0), n


def _continuations(heard: Sequence[Heard]) -> dict[int, Heard]:
    """For each paused stretch (by index in ``heard``), the stretch of the same source that
    continued it after the unpause (the next one starting at or after its end)."""
    out: dict[int, Heard] = {}
    for i, h in enumerate(heard):
        if not h.paused or h.interrupted:
            continue
        nxt = next((c for c in heard if c.source == h.source and c.start >= h.end
                    and c is not h), None)
        if nxt is not None:
            out[i] = nxt
    return out


def bargein_pauses(spoken: Sequence[Spoken], heard: Sequence[Heard]
                   ) -> tuple[int, int, list[float]]:
    """(backchannels/noise during bot audio that paused it without a cut, how many were said
    during bot audio, the durations in s of those pauses: the pause → the same audio heard
    again; a pause never continued has no duration)."""
    cont = _continuations(heard)
    n = hits = 0
    durations: list[float] = []
    for s in spoken:
        if s.kind not in ("backchannel", "noise"):
            continue
        h = _playing_at(heard, s.speech_start)
        if h is None:
            continue
        n += 1
        if h.paused and not h.interrupted and h.end <= s.speech_end + 1.0:
            hits += 1
            nxt = cont.get(next(i for i, x in enumerate(heard) if x is h))
            if nxt is not None:
                durations.append(nxt.start - h.end)
    return hits, n, durations


PREMATURE_KINDS: tuple[Kind, ...] = ("utterance", "bargein")


@dataclass(frozen=True)
class Premature:
    """Bot audio that started while the caller was still inside an utterance."""

    scenario: str
    start: float                 # when the caller began to hear it (monotonic s)
    into_gap: float | None       # s into the caller's pause it started (None: not in a gap)
    speech_start: float = 0.0    # the utterance it broke into
    speech_end: float = 0.0


def premature_replies(spoken: Sequence[Spoken], heard: Sequence[Heard]
                      ) -> tuple[list[Premature], dict[str, int]]:
    """(one ``Premature`` per utterance/barge-in that heard bot audio start inside it, how
    many utterances/barge-ins there were by scenario). See the module doc."""
    cont = {id(h) for h in _continuations(heard).values()}
    starts = sorted(h.start for h in heard if id(h) not in cont)
    out: list[Premature] = []
    n: dict[str, int] = {}
    for s in spoken:
        if s.kind not in PREMATURE_KINDS:
            continue
        name = s.scenario_name
        n[name] = n.get(name, 0) + 1
        first = next((t for t in starts if s.speech_start < t < s.speech_end), None)
        if first is None:
            continue
        gap = next((g for g in s.gaps if g[0] <= first < g[1]), None)
        out.append(Premature(name, first, None if gap is None else first - gap[0],
                             s.speech_start, s.speech_end))
    return out, n


def premature_counts(spoken: Sequence[Spoken], heard: Sequence[Heard]
                     ) -> dict[str, tuple[int, int]]:
    """Per scenario: (utterances that heard a premature reply, utterances)."""
    found, n = premature_replies(spoken, heard)
    out = {name: (0, count) for name, count in n.items()}
    for p in found:
        hits, count = out[p.scenario]
        out[p.scenario] = (hits + 1, count)
    return out


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus WER over pairs (jiwer); None when there is nothing to score."""
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if not pairs:
        return None
    import jiwer

    return float(jiwer.wer([p[0].lower() for p in pairs], [p[1].lower() for p in pairs]))


# ---------------------------------------------------------------------------------------------
# Daemon-side records (the store's turn records) against the caller's timeline.
# ---------------------------------------------------------------------------------------------


def hop_samples(hops: Iterable[Mapping[str, float]]) -> dict[str, list[float]]:
    """Per hop name, the durations in seconds from turn records' ``hops_ms`` (ms) mappings.
    Hop order follows first appearance."""
    out: dict[str, list[float]] = {}
    for h in hops:
        for name, ms in h.items():
            out.setdefault(name, []).append(float(ms) / 1000)
    return out


def match_transcripts(spoken: Sequence[Spoken], turn_starts: Sequence[tuple[float, str]],
                      slack_s: float = 0.5) -> list[tuple[str, str]]:
    """(reference, hypothesis) pairs for WER: each ``utterance``/``bargein`` with known text,
    paired with the transcript of the daemon turn whose speech start (absolute monotonic
    seconds) falls inside that speech (± ``slack_s``). The first matching turn wins; an
    utterance no turn matched is paired with "" (every word deleted)."""
    pairs: list[tuple[str, str]] = []
    used: set[int] = set()
    for s in spoken:
        if s.kind not in ("utterance", "bargein") or not s.text.strip():
            continue
        hyp = ""
        for i, (t, text) in enumerate(turn_starts):
            if i not in used and s.speech_start - slack_s <= t <= s.speech_end + slack_s:
                used.add(i)
                hyp = text
                break
        pairs.append((s.text, hyp))
    return pairs


def cpu_per_call_minute(cpu_s: float, call_s: float) -> float:
    """CPU seconds spent per minute of call (``call_s``: summed call durations); 0 if none."""
    return cpu_s / (call_s / 60) if call_s > 0 else 0.0


def max_calls_within_budget(rows: Sequence[tuple[int, float | None]], budget_s: float
                            ) -> int | None:
    """The highest concurrency whose p95 turn latency stays within ``budget_s``, counting up
    from the lowest level and stopping at the first level over budget (or without data).
    ``rows`` are (calls, p95 seconds or None). None if even the lowest level is over."""
    best: int | None = None
    for calls, p95 in sorted(rows):
        if p95 is None or p95 > budget_s:
            break
        best = calls
    return best
