"""espeak-ng engine: a fast, robotic fallback voice run as a subprocess.

How this works: each piece of text is written to ``espeak-ng --stdout -b 1 -v <voice>`` on
stdin (so no text ever reaches a command line); the WAV it prints (22050 Hz, 16-bit mono,
with a streaming header whose sizes are bogus) is read cooperatively through
``gevent.subprocess``, checking the cancel token and the time limit every 10 ms, then
resampled with soxr to the call's rate. Cancelling or timing out kills the process.

``run_tool`` and ``wav_chunk`` are shared with the other subprocess engine (``flite``).
"""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Iterator

import gevent
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

#: How often a running tool is checked for cancellation and its time limit.
_POLL_S = 0.01


def _parse_wav_stream(data: bytes, tool: str = "espeak-ng") -> tuple[int, bytes]:
    """(rate, pcm) of a WAV printed by ``tool`` (RIFF/data sizes may be bogus 0x7fff…, as
    espeak's streamed header has them); ``TtsError`` if it is not 16-bit mono PCM WAV."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError(f"{tool} printed no WAV header: {data[:16]!r}")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise TtsError(f"{tool} WAV has a short fmt chunk ({size} bytes)")
            fmt, channels, rate = struct.unpack_from("<HHI", data, body)
            bits = struct.unpack_from("<H", data, body + 14)[0]
            if fmt != 1 or channels != 1 or bits != 16 or rate <= 0:
                raise TtsError(f"{tool} WAV is not 16-bit mono PCM ({fmt},{channels},{bits})")
        elif cid == b"data":
            if not rate:
                raise TtsError(f"{tool} WAV has data before fmt")
            pcm = data[body:]
            return rate, pcm[: len(pcm) - len(pcm) % 2]
        pos = body + size + (size & 1)
    raise TtsError(f"{tool} WAV has no data chunk")

def run_tool(tool: str, argv: list[str], stdin: bytes, timeout_s: float,
             cancel: CancelToken | None = None) -> tuple[int, bytes, str] | None:
    """Run ``argv`` (never through a shell), write ``stdin`` to it and collect its output,
    cooperatively (gevent). Returns (exit code, stdout, first 300 characters of stderr), or
    None once ``cancel`` is set. ``TtsError`` when it runs longer than ``timeout_s``. The
    process is killed whenever this returns or raises before it exited."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    worker = gevent.spawn(proc.communicate, stdin)
    deadline = time.monotonic() + timeout_s
    try:
        while not worker.ready():
            if cancel is not None and cancel.cancelled:
                return None
            if time.monotonic() > deadline:
                raise TtsError(f"{tool} took longer than {timeout_s} s")
            worker.join(timeout=_POLL_S)
        out, err = worker.get()
        return proc.returncode, out or b"", (err or b"")[:300].decode("utf-8", "replace").strip()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        worker.join(timeout=5)
        worker.kill(block=False)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def wav_chunk(data: bytes, tool: str, rate: int, text: str) -> AudioChunk | None:
    """The WAV ``data`` printed by ``tool`` as one chunk resampled to ``rate``; None when it
    holds no samples. ``TtsError`` if it is not 16-bit mono PCM WAV."""
    src_rate, pcm = _parse_wav_stream(data, tool)
    if not pcm:
        return None
    return AudioChunk(
        pcm=resample(np.frombuffer(pcm, dtype="<i2"), src_rate, rate), rate=rate, text=text
    )


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
        result = run_tool(
            "espeak-ng",
            [self.binary, "--stdout", "-b", "1", "-s", str(self.speed_wpm), "-v", self.voice],
            text.encode("utf-8") + b"\n", self.timeout_s, cancel,
        )
        if result is None:
            return
        rc, out, err = result
        if rc != 0 or not out:
            raise TtsError(f"espeak-ng failed (exit {rc}) for voice {self.voice!r}: {err}")
        chunk = wav_chunk(out, "espeak-ng", rate, text)
        if chunk is not None:
            yield chunk
