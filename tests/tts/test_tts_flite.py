"""The flite engine on this machine (Debian package ``flite``): real synthesis at both call
rates, safe handling of odd text, cancellation, the time limit and its error paths."""

from __future__ import annotations

from pathlib import Path

import gevent
import pytest
from ttskit import check_speech

from callctl import tts
from callctl.config import TtsConfig
from callctl.tts.base import CancelToken, EngineUnavailable, TtsError
from callctl.tts.flite import FliteSynthesizer, list_voices


@pytest.fixture(scope="module")
def flite() -> FliteSynthesizer:
    return FliteSynthesizer()


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("voice", ["slt", "kal"])
def test_flite_speaks_at_the_call_rate(rate: int, voice: str) -> None:
    """kal renders at 8 kHz and slt at 16 kHz: both come out at the call's rate, not silent,
    about as long as a short English sentence takes to say."""
    text = "Please hold while I look that up."
    chunks = list(FliteSynthesizer(voice).synthesize(text, rate))
    assert all(c.text == text for c in chunks)
    check_speech(chunks, rate, text, min_rms=300, min_peak=3000)


def test_flite_longer_text_gives_longer_audio(flite: FliteSynthesizer) -> None:
    short = sum(c.duration_s for c in flite.synthesize("Hello.", 8000))
    long = sum(c.duration_s for c in flite.synthesize(
        "Hello, thanks for calling, your account balance is forty two dollars.", 8000))
    assert long > 2 * short > 0


def test_flite_non_ascii_and_shell_characters(flite: FliteSynthesizer, tmp_path: Path) -> None:
    """Quotes, shell syntax, option-looking words and non-ASCII letters are spoken (or
    skipped), never interpreted: nothing is created, the text is still spoken."""
    marker = tmp_path / "pwned"
    text = (f"Caf\u00e9 na\u00efve; $(touch {marker}) `touch {marker}` \"quoted\" 'single' "
            f"-voice kal --help > {marker} && | \u4f60\u597d \\n -o out.wav")
    chunks = list(flite.synthesize(text, 8000))
    assert chunks and chunks[0].duration_s > 1.0
    assert not marker.exists()
    assert not Path("out.wav").exists()


def test_flite_text_starting_with_a_dash(flite: FliteSynthesizer) -> None:
    chunks = list(flite.synthesize("-lv is not an option here.", 16000))
    assert chunks and chunks[0].duration_s > 0.5


def test_flite_missing_binary_is_unavailable() -> None:
    with pytest.raises(EngineUnavailable, match="install the flite package"):
        FliteSynthesizer(binary="flite-not-installed")


def test_flite_unknown_voice_is_refused_at_build() -> None:
    """flite itself would silently speak with its default voice; we refuse instead."""
    assert {"kal", "slt"} <= set(list_voices("flite"))
    with pytest.raises(EngineUnavailable, match=r"unknown voice 'xx-nonexistent'.*slt"):
        FliteSynthesizer(voice="xx-nonexistent")
    with pytest.raises(EngineUnavailable, match="does not exist"):
        FliteSynthesizer(voice="/nonexistent/voice.flitevox")


def test_flite_bad_rate(flite: FliteSynthesizer) -> None:
    with pytest.raises(ValueError, match="unsupported call rate"):
        list(flite.synthesize("Hi.", 44100))


def test_flite_time_limit_kills_it() -> None:
    slow = FliteSynthesizer(timeout_s=0.0)
    with pytest.raises(TtsError, match="took longer"):
        list(slow.synthesize("word " * 2000, 8000))


def test_flite_cancel_before_start_yields_nothing(flite: FliteSynthesizer) -> None:
    token = CancelToken()
    token.cancel()
    assert list(flite.synthesize("Hello there.", 8000, token)) == []


def test_flite_cancel_mid_synthesis_stops_it(flite: FliteSynthesizer) -> None:
    token = CancelToken()
    gevent.spawn_later(0.05, token.cancel)
    out = list(flite.synthesize("This is a fairly long text. " * 200, 8000, token))
    assert out == []


def test_flite_runs_off_the_hub(flite: FliteSynthesizer) -> None:
    """While flite synthesizes in one greenlet, this one keeps getting scheduled (flite is a
    subprocess waited on cooperatively), and the audio still arrives."""
    job = gevent.spawn(lambda: list(flite.synthesize("This takes a little while. " * 8, 8000)))
    wakeups = 0
    while not job.ready():
        gevent.sleep(0.005)
        wakeups += 1
    assert job.get() and wakeups > 3


def test_flite_from_config_as_main_and_fallback() -> None:
    main = tts.build(TtsConfig(engine="flite", voice="kal", fallback_engine="espeak"))
    assert (main.engine, main.voice) == ("flite", "kal")
    fallback = tts.build_fallback(TtsConfig(engine="piper", fallback_engine="flite"))
    assert fallback is not None and (fallback.engine, fallback.voice) == ("flite", "slt")
    assert tts.build_fallback(TtsConfig(engine="flite", fallback_engine="flite")) is None
