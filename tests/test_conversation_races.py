"""The dialog loop where events race: keys over a closing reply, words over the bot that are
too few to interrupt, a recognizer without partials, replies that must never overlap. End to
end through the emulator with real engines."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from conversation_rig import Rig

from callctl import config
from callctl.sim import callers
from callctl.sim.interfaces import Heard

GREETING = "Thank you for calling Acme. Would you like billing, technical support, or an agent?"


def assert_no_overlap(heard: list[Heard]) -> None:
    """The caller never hears two replies at once."""
    for a, b in itertools.pairwise(heard):
        assert b.start >= a.end - 0.025, heard


@pytest.mark.slow
def test_key_over_a_closing_reply_carries_it_out_at_once(tmp_path: Path, redis_url: str,
                                                         whisper_engine: Any) -> None:
    rig = Rig(tmp_path, redis_url, whisper_engine)
    call, _ = rig.run([callers.pause(1.0), callers.dtmf("1"), callers.pause(0.7),
                       callers.dtmf("5"), callers.pause(3.0)])
    heard = call.heard()
    assert rig.said == [GREETING, "Connecting you to billing."], rig.said
    assert len(heard) == 2 and heard[0].interrupted and heard[1].interrupted, heard
    assert rig.transfers(call.uuid) == ["7001"]     # not stranded in silence after the cut
    assert_no_overlap(heard)
    # the flow's event action reached the store's events stream
    events = [e for e in rig.store.read_events(count=1000)
              if e.uuid == call.uuid and e.kind == "dialog"]
    assert [(e.fields["name"], e.fields["data"]) for e in events] == [
        ("front_desk.routed", '{"department":"billing"}')]


@pytest.mark.slow
def test_too_few_words_over_the_bot_are_answered_after_it(tmp_path: Path, redis_url: str,
                                                          whisper_engine: Any) -> None:
    rig = Rig(tmp_path, redis_url, whisper_engine,
              turns=config.TurnsConfig(bargein_min_words=3))
    call, _ = rig.run([callers.barge_in("Billing.", after_s=0.8),
                       callers.wait_for_bot(silence_s=0.5), callers.pause(2.0)])
    heard = call.heard()
    assert heard and not heard[0].interrupted, heard       # one word: the bot went on
    assert rig.said == [GREETING, "Connecting you to billing."], rig.said
    assert rig.transfers(call.uuid) == ["7001"]
    assert_no_overlap(heard)
    # answered after the greeting on purpose: stored as deferred, not counted as latency
    turns = rig.store.get_turns(call.uuid)
    assert len(turns) == 1 and "deferred" in turns[0].marks_ms, turns
    assert rig.sample("callctl_turn_latency_seconds_count", {"route": "front_desk"}) == 0
    assert rig.sample("callctl_hop_seconds_count", {"hop": "dialog"}) == 0


@pytest.mark.slow
def test_words_barge_in_at_speech_end_without_partials(tmp_path: Path, redis_url: str,
                                                       whisper_engine: Any) -> None:
    # Whisper gives no partials: with words required, the verdict comes with the final
    rig = Rig(tmp_path, redis_url, whisper_engine,
              turns=config.TurnsConfig(bargein_min_words=1))
    call, _ = rig.run([callers.barge_in("Technical support please.", after_s=0.8),
                       callers.wait_for_bot(silence_s=0.5), callers.pause(2.0)])
    heard = call.heard()
    assert heard[0].interrupted, heard
    assert rig.said == [GREETING, "Connecting you to technical support."], rig.said
    assert rig.transfers(call.uuid) == ["7002"]
    assert rig.sample("callctl_bargeins_total", {"kind": "speech"}) == 1
    assert (rig.sample("callctl_bargein_latency_seconds_count", {"route": "front_desk"})) == 1
    assert_no_overlap(heard)


@pytest.mark.slow
def test_expected_yes_over_the_question_is_an_answer_not_a_backchannel(
        tmp_path: Path, redis_url: str, whisper_engine: Any) -> None:
    # "yes" is in turns.backchannels, but at a yes/no question it is the answer
    rig = Rig(tmp_path, redis_url, whisper_engine, flow="appointment")
    try:
        call, _ = rig.call([callers.barge_in("Yes.", after_s=1.5),
                            callers.wait_for_bot(silence_s=0.5), callers.pause(1.0)])
        cause = rig.finish(call)
    finally:
        rig.close()
    heard = call.heard()
    assert heard[0].interrupted, heard
    assert len(rig.said) == 2 and rig.said[1].startswith("Great, your appointment is confirmed")
    assert cause == "NORMAL_CLEARING"
    assert rig.sample("callctl_bargeins_total", {"kind": "false"}) == 0
    assert_no_overlap(heard)
