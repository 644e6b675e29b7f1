"""The Smart Turn model: its features, its start-up errors, and what it says of real speech.

Scores on Piper speech are printed (``-s``) and asserted only where the model is clear;
what it cannot tell (a sentence cut after "is" sounds finished to it) is measured, not
asserted. No assertion on time: CPU cost is reported, not checked.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callctl import config
from callctl.asr import models
from callctl.asr.base import AsrModelError
from callctl.daemon import StartupErrors
from callctl.media import smart_turn
from callctl.media.smart_turn import SmartTurn, TurnModelError, load_turn_model
from callctl.sim.corpus import RATE, Utterance, utterance


def test_log_mel_shape_and_range() -> None:
    rng = np.random.default_rng(3)
    feats = smart_turn.log_mel(smart_turn.window(rng.standard_normal(16000) * 0.1, 16000))
    assert feats.shape == (80, 800) and feats.dtype == np.float32
    assert feats.min() >= feats.max() - 2.0 - 1e-6    # clamped 8 (log10) below the top, / 4


def test_a_tone_lands_in_its_mel_band() -> None:
    t = np.arange(16000 * 2) / 16000
    feats = smart_turn.log_mel(smart_turn.window(0.3 * np.sin(2 * np.pi * 1000 * t), 16000))
    band = int(np.argmax(feats[:, -300:-200].mean(axis=1)))          # inside the tone
    centres = smart_turn._mel_to_hz(np.linspace(0, smart_turn._hz_to_mel(np.array(8000.0)),
                                                82))[1:-1]
    assert abs(centres[band] - 1000) < 80


def test_mel_filters_are_slaney_normalised_triangles() -> None:
    f = smart_turn.mel_filters()
    assert f.shape == (80, 201) and (f >= 0).all()
    assert (f.argmax(axis=1)[1:] >= f.argmax(axis=1)[:-1]).all()      # bands in order


def test_window_resamples_pads_in_front_and_keeps_the_last_8_s() -> None:
    short = smart_turn.window(np.full(8000, 1000, np.int16), 8000)    # 1 s at 8 kHz
    assert short.shape == (128000,) and not short[:100000].any() and short[-8000:].any()
    long = smart_turn.window(np.arange(16000 * 10, dtype=np.float32), 16000)
    assert long.shape == (128000,) and long[-1] == 16000 * 10 - 1


# -- loading --------------------------------------------------------------------------------


def cfg_with(path: str, models_dir: Path) -> config.Config:
    return config.replace(config.Config(), turns={"turn_model_path": path},
                          asr={"models_dir": str(models_dir)})


def test_a_missing_model_file_is_one_start_up_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(TurnModelError) as e:
        load_turn_model(cfg_with(str(missing), tmp_path))
    text = str(e.value)
    assert "\n" not in text and str(missing) in text
    assert "callctl models fetch smart-turn-v3.2" in text and 'turn_model_path = ""' in text
    assert isinstance(e.value, AsrModelError) and isinstance(e.value, StartupErrors)


def test_a_broken_model_file_is_one_start_up_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model" * 100)
    with pytest.raises(TurnModelError) as e:
        SmartTurn(bad)
    assert "\n" not in str(e.value) and "cannot be loaded" in str(e.value)


def test_empty_is_off_and_auto_uses_the_models_dir(tmp_path: Path,
                                                   turn_model_path: Path) -> None:
    assert load_turn_model(cfg_with("", tmp_path)) is None
    assert load_turn_model(cfg_with("auto", tmp_path)) is None          # not installed: off
    (tmp_path / smart_turn.MODEL_FILE).symlink_to(turn_model_path)
    loaded = load_turn_model(cfg_with("auto", tmp_path))
    assert loaded is not None and loaded.path == tmp_path / smart_turn.MODEL_FILE
    assert config.TurnsConfig().turn_model_path == "auto"


def test_the_catalog_entry_matches_the_fetched_file(turn_model_path: Path) -> None:
    info = models.CATALOG["smart-turn-v3.2"]
    assert info.file == turn_model_path.name == smart_turn.MODEL_FILE
    assert info.url.startswith("https://files.pythonhosted.org/") and info.sha256
    assert "OK" in models.verify_file(turn_model_path, info)


def test_fetch_takes_only_the_member_and_checks_it(tmp_path: Path, turn_model_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``fetch`` of a single-file entry on a local wheel-like zip: the member is written,
    a wrong member checksum is refused and nothing is left behind."""
    import zipfile

    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(turn_model_path, "pkg/data/model.onnx")
        z.writestr("pkg/__init__.py", "")
    info = dataclasses.replace(models.CATALOG["smart-turn-v3.2"], url="file://x",
                               sha256=models.sha256_of(wheel), member="pkg/data/model.onnx")

    def fake_download(url: str, dest: Path, **_: Any) -> None:
        dest.write_bytes(wheel.read_bytes())

    monkeypatch.setattr(models, "download", fake_download)
    out = tmp_path / "models"
    got = models.fetch(info, out)
    assert got == out / smart_turn.MODEL_FILE and sorted(p.name for p in out.iterdir()) == [
        smart_turn.MODEL_FILE]
    wrong = dataclasses.replace(info, member_sha256="0" * 64)
    with pytest.raises(models.ModelFetchError, match="checksum mismatch"):
        models.fetch(wrong, tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []


# -- the model on real speech ---------------------------------------------------------------


def _pauses(u: Utterance, min_s: float = 0.15) -> list[float]:
    """Where the pauses inside the speech start (s): Piper pauses at commas."""
    w = RATE // 100
    x = u.samples.astype(np.float32)
    rms = np.sqrt((x[:len(x) // w * w].reshape(-1, w) ** 2).mean(axis=1))
    quiet = rms < rms.max() * 0.01
    out, i, end = [], int(u.speech_start_s * 100), int(u.speech_end_s * 100)
    while i < end:
        j = i
        while j < end and quiet[j]:
            j += 1
        if j - i >= min_s * 100:
            out.append(i / 100)
        i = j + 1
    assert out, f"no pause in {u.text!r}"
    return out


def _score(model: SmartTurn, u: Utterance, end_s: float) -> tuple[float, float]:
    """The model on ``u`` from 0.2 s before speech to 0.2 s into the silence at ``end_s``."""
    seg = u.samples[max(0, round((u.speech_start_s - 0.2) * RATE)):round((end_s + 0.2) * RATE)]
    return model.timed(seg, RATE)


def test_finished_sentences_score_complete(turn_model: SmartTurn) -> None:
    for text in ("I would like to check my account balance, please.",
                 "Can I talk to someone about my last bill?"):
        u = utterance(text)
        p, cpu = _score(turn_model, u, u.speech_end_s)
        print(f"finished {p:.3f} ({cpu * 1000:.0f} ms CPU): {text}")
        assert p > 0.5, text
    # the same input gives the same probability
    u = utterance("I would like to check my account balance, please.")
    assert _score(turn_model, u, u.speech_end_s)[0] == _score(turn_model, u, u.speech_end_s)[0]


def test_cut_sentences_measured(turn_model: SmartTurn) -> None:
    """Piper speech cut at its first comma pause. "I'd like to, um," left hanging scores
    incomplete with a wide margin; "My account number is," sounds finished to the model (its
    authors' limit, and why the words still count in the table): measured only."""
    um = utterance("I'd like to, um, change my address.")
    p_um, _ = _score(turn_model, um, _pauses(um)[1])               # the pause after "um"
    print(f"cut after 'um': {p_um:.3f}")
    assert p_um < 0.5
    for text in ("My account number is, four five seven two.",
                 "My date of birth is, the third of May."):
        u = utterance(text)
        p, _ = _score(turn_model, u, _pauses(u)[0])
        print(f"cut at the comma {p:.3f}: {text.split(',')[0]}")
        assert 0.0 <= p <= 1.0
