"""Pause-then-decide on synthetic caller timelines: a pause is the stop for barge-in latency,
a backchannel that only paused the bot is a hesitation (not a false barge-in), and the
continued audio is not a reply."""

from __future__ import annotations

import pytest

from callctl.bench.measure import (
    Spoken,
    bargein_latencies,
    bargein_pauses,
    false_bargein_rate,
    turn_latencies,
)
from callctl.sim.interfaces import Heard


def test_backchannel_pause_is_a_hesitation_not_a_false_bargein() -> None:
    spoken = [Spoken(1.0, 1.4, "backchannel", "mhm"), Spoken(6.0, 6.3, "backchannel", "okay")]
    heard = [Heard(0.5, 1.1, "a.wav", False, paused=True),    # paused 0.1 s after onset
             Heard(1.9, 4.0, "a.wav", False),                 # continued 0.8 s later
             Heard(5.0, 8.0, "b.wav", False)]                 # talked through, no pause
    hits, n, durations = bargein_pauses(spoken, heard)
    assert (hits, n) == (1, 2)
    assert durations == pytest.approx([0.8])
    assert false_bargein_rate(spoken, heard) == (0.0, 2)


def test_a_paused_then_cut_reply_counts_as_cut_at_the_pause() -> None:
    spoken = [Spoken(2.0, 3.0, "bargein", "billing please"),
              Spoken(9.0, 9.3, "backchannel", "yeah")]
    heard = [Heard(1.0, 2.1, "a.wav", True, paused=True),     # paused, then uuid_break
             Heard(3.5, 5.0, "reply.wav", False),
             Heard(8.5, 9.2, "c.wav", True, paused=True)]     # a backchannel that was cut
    lat, ignored = bargein_latencies(spoken, heard)
    assert lat == pytest.approx([0.1]) and ignored == 0
    assert false_bargein_rate(spoken, heard) == (1.0, 1)      # still a false barge-in
    assert bargein_pauses(spoken, heard)[:2] == (0, 1)


def test_continued_audio_is_not_a_reply_to_a_turn() -> None:
    spoken = [Spoken(2.0, 2.5, "utterance", "hello")]
    heard = [Heard(1.0, 2.1, "a.wav", False, paused=True),
             Heard(2.6, 3.0, "a.wav", False),                  # the paused prompt continuing
             Heard(3.2, 4.0, "reply.wav", False)]
    lat, missed = turn_latencies(spoken, heard)
    assert lat == pytest.approx([0.7]) and missed == 0
