"""espeak-ng engine: a fast, robotic fallback voice run as a subprocess.

How this works: each piece of text is written to ``espeak-ng --stdout -b 1 -v <voice>`` on
stdin (so no text ever reaches a command line); the WAV it prints (22050 Hz, 16-bit mono,
with a streaming header whose sizes are bogus) is read cooperatively through
``gevent.subprocess``, checking the cancel token and the time limit between reads, then
resampled with soxr to the call's rate. Cancelling or timing out kills the process. flite
is not offered: it is not packaged on the target Debian image.
"""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Iterator

import numpy as np
from gevent import subprocess

from callctl.tts.base import (
    AudioChunk,
    CancelToken,
    EngineUnavailable,
    TtsError,
    check_rate,
    resample,
)

_READ = 8192


def _parse_wav_stream(data: bytes) -> tuple[int, bytes]:
    """(rate, pcm) of espeak's streamed WAV (RIFF/data sizes may be 0x7fff…); ``TtsError``
    if it is not 16-bit mono PCM WAV."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError(f"espeak-ng printed no WAV header: {data[:16]!r}")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise TtsError(f"espeak-ng WAV has a short fmt chunk ({size} bytes)")
            fmt, channels, rate = struct.unpack_from("<HHI", data, body)
            bits = struct.unpack_from("<H", data, body + 14)[0]
            if fmt != 1 or channels != 1 or bits != 16 or rate <= 0:
                raise TtsError(f"espeak-ng WAV is not 16-bit mono PCM ({fmt},{channels},{bits})")
        elif cid == b"data":
            if not rate:
                raise TtsError("espeak-ng WAV has data before fmt")
            pcm = data[body:]
            return rate, pcm[: len(pcm) - len(pcm) % 2]
        pos = body + size + (size & 1)
    raise TtsError("espeak-ng WAV has no data chunk")


class EspeakSynthesizer:
    """espeak-ng behind the ``Synthesizer`` interface. ``timeout_s`` bounds one piece."""

    engine = "espeak"

    def __init__(self, voice: str = "", binary: str = "espeak-ng", timeout_s: float = 10.0,
                 speed_wpm: int = 170) -> None:
        path = shutil.which(binary)
        if path is None:
            raise EngineUnavailable(
                "espeak", f"{binary!r} not found on PATH", "install the espeak-ng package"
            )
        self.binary = path
        self.voice = voice or "en-us"
        self.timeout_s = timeout_s
        self.speed_wpm = speed_wpm

    def synthesize(
        self, text: str, rate: int, cancel: CancelToken | None = None
    ) -> Iterator[AudioChunk]:
        """One chunk for ``text`` at ``rate``; nothing if cancelled. ``TtsError`` when
        espeak-ng fails (unknown voice, crash) or exceeds ``timeout_s``."""
        check_rate(rate)
        proc = subprocess.Popen(
            [self.binary, "--stdout", "-b", "1", "-s", str(self.speed_wpm), "-v", self.voice],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out = bytearray()
        err = ""
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(text.encode("utf-8") + b"\n")
            proc.stdin.close()
            deadline = time.monotonic() + self.timeout_s
            while True:
                if cancel is not None and cancel.cancelled:
                    return
                if time.monotonic() > deadline:
                    raise TtsError(f"espeak-ng took longer than {self.timeout_s} s")
                block = proc.stdout.read1(_READ) if hasattr(proc.stdout, "read1") \
                    else proc.stdout.read(_READ)
                if not block:
                    break
                out += block
            rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            err = proc.stderr.read(300).decode("utf-8", "replace").strip() if proc.stderr else ""
        except subprocess.TimeoutExpired as exc:
            raise TtsError(f"espeak-ng did not exit within {self.timeout_s} s") from exc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None and not stream.closed:
                    stream.close()
        if rc != 0 or not out:
            raise TtsError(f"espeak-ng failed (exit {rc}) for voice {self.voice!r}: {err}")
        src_rate, pcm = _parse_wav_stream(bytes(out))
        if not pcm:
            return
        yield AudioChunk(
            pcm=resample(np.frombuffer(pcm, dtype="<i2"), src_rate, rate), rate=rate, text=text
        )
