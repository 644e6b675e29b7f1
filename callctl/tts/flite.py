"""flite engine: CMU Flite, a second fast fallback voice (Debian package ``flite``).

How this works: each piece of text is written to a private temporary directory as a UTF-8
file and spoken with ``flite -voice <voice> -f text.txt -o out.wav`` (no text ever reaches a
command line, and flite cannot print its WAV to a pipe: it seeks back to fix the header), run
cooperatively by ``espeak.run_tool``, which checks the cancel token and the time limit while
it runs and kills it on either. The WAV (8000 Hz for ``kal``, 16000 Hz for the others) is
resampled with soxr to the call's rate. flite silently falls back to its default voice when
asked for one it does not have, so the voice is checked against ``flite -lv`` when the engine
is built.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gevent import subprocess

from callctl.tts.base import AudioChunk, CancelToken, EngineUnavailable, TtsError, check_rate
from callctl.tts.espeak import run_tool, wav_chunk

#: The voice used when ``tts.voice`` is empty (US English female, 16 kHz).
DEFAULT_VOICE = "slt"
_REINSTALL = "reinstall the flite package"


def list_voices(binary: str, timeout_s: float = 10.0) -> list[str]:
    """The built-in voice names of the flite at ``binary`` (``flite -lv``);
    ``EngineUnavailable`` if it cannot tell."""
    try:
        done = subprocess.run([binary, "-lv"], capture_output=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineUnavailable("flite", f"flite -lv failed: {exc}", _REINSTALL) from exc
    text = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0 or ":" not in text:
        raise EngineUnavailable(
            "flite", f"flite -lv failed (exit {done.returncode}): {text[:200]!r}", _REINSTALL
        )
    return text.split(":", 1)[1].split()


class FliteSynthesizer:
    """flite behind the ``Synthesizer`` interface. ``voice`` is a built-in voice name (see
    ``flite -lv``) or the path of a ``.flitevox`` file; ``timeout_s`` bounds one piece.
    ``EngineUnavailable`` when the binary or the voice is missing."""

    engine = "flite"

    def __init__(self, voice: str = "", binary: str = "flite", timeout_s: float = 10.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise EngineUnavailable(
                "flite", f"{binary!r} not found on PATH", "install the flite package"
            )
        self.binary = path
        self.voice = voice or DEFAULT_VOICE
        self.timeout_s = timeout_s
        if os.sep in self.voice or self.voice.endswith(".flitevox"):
            if not Path(self.voice).is_file():
                raise EngineUnavailable(
                    "flite", f"voice file {self.voice!r} does not exist",
                    "set tts.voice to a .flitevox file or a built-in voice",
                )
        else:
            known = list_voices(path)
            if self.voice not in known:
                raise EngineUnavailable(
                    "flite", f"unknown voice {self.voice!r}",
                    f"set tts.voice to one of {', '.join(known)} or a .flitevox file",
                )

    def synthesize(
        self, text: str, rate: int, cancel: CancelToken | None = None
    ) -> Iterator[AudioChunk]:
        """One chunk for ``text`` at ``rate``; nothing if cancelled. ``TtsError`` when flite
        fails or exceeds ``timeout_s``."""
        check_rate(rate)
        with tempfile.TemporaryDirectory(prefix="callctl-flite-") as tmp:
            text_path, wav_path = Path(tmp) / "text.txt", Path(tmp) / "out.wav"
            text_path.write_bytes(text.encode("utf-8") + b"\n")
            result = run_tool(
                "flite",
                [self.binary, "-voice", self.voice, "-f", str(text_path), "-o", str(wav_path)],
                b"", self.timeout_s, cancel,
            )
            if result is None:
                return
            rc, _, err = result
            data = wav_path.read_bytes() if wav_path.is_file() else b""
        if rc != 0 or not data:
            raise TtsError(f"flite failed (exit {rc}) for voice {self.voice!r}: {err}")
        chunk = wav_chunk(data, "flite", rate, text)
        if chunk is not None:
            yield chunk
