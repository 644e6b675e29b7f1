"""Contracts between the emulator's signalling half (ESL, channels, api) and its media half
(media clock, playback, mod_audio_fork client, scripted callers).

The signalling half owns ``Channel`` objects and implements ``ChannelSignals``. Each channel
owns one ``ChannelMedia`` (built by ``callctl.sim.media.new_media``) that runs the channel's
20 ms media clock. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from numpy import int16
    from numpy.typing import NDArray

PlayResult = Literal["done", "break", "notfound", "error"]


class ChannelSignals(Protocol):
    """What the media half may ask of the channel (implemented by the signalling half)."""

    uuid: str

    def fire_custom(self, subclass: str, body: str | None) -> None:
        """Emit a CUSTOM event (e.g. ``mod_audio_fork::connect``) carrying full channel data
        and an optional raw body, to every ESL listener that subscribed to it."""

    def fire_event(self, name: str, headers: dict[str, str]) -> None:
        """Emit a channel event (e.g. ``PLAYBACK_START``) with these extra headers after the
        channel data (``Playback-File-Path`` etc.)."""

    def dtmf(self, digit: str, duration_samples: int = 2000) -> None:
        """The caller pressed ``digit`` (fires DTMF, RTP source)."""

    def caller_hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """The caller hung up (BYE)."""

    def is_up(self) -> bool:
        """False once the channel is hung up."""


@dataclass(frozen=True)
class Heard:
    """One stretch of audio the caller heard from the switch, on the channel's clock."""

    start: float          # time.monotonic() when its first frame went to the caller
    end: float            # time.monotonic() of its last frame (updated while it plays)
    source: str           # file path, "stream" (bidirectional fork) or "tone"
    interrupted: bool     # stopped by uuid_break / killAudio / stop_play before its end
    paused: bool = False  # ended by uuid_fileman pause (silence follows; an unpause starts
    #                       a new stretch of the same source; a break while paused marks
    #                       this stretch interrupted: the pause was the stop)


class ChannelMedia(Protocol):
    """The media half of one channel."""

    def start(self) -> None:
        """Start the 20 ms media clock (on answer or pre-answer)."""

    def stop(self) -> None:
        """Stop everything (hangup): forks get Close 1000, temp files are deleted."""

    def play(self, path: str, broadcast: bool = False) -> PlayResult:
        """Play a file to the caller; blocks the calling greenlet until it ends. Fires
        PLAYBACK_START/PLAYBACK_STOP through ``ChannelSignals.fire_event`` (none when the
        file is missing). ``broadcast`` applies uuid_broadcast's 100 ms lead."""

    def break_playback(self, all_: bool = False) -> None:
        """uuid_break: stop the current playback within a frame."""

    def has_file_handle(self) -> bool:
        """A file is open for playback (uuid_fileman has something to act on)."""

    def toggle_pause(self) -> bool:
        """uuid_fileman pause: toggle the pause of the current file; False when no file is
        playing (FreeSWITCH's ``-ERR No File Handle!``)."""

    def write_idle_frames(self, on: bool) -> None:
        """The park loop writes frames while nothing plays (``send_silence_when_idle``):
        streamed fork audio is heard only into frames the channel writes."""

    def fork_api(self, argv: list[str]) -> str:
        """``uuid_audio_fork <uuid> …`` with argv after the uuid; returns the api body
        (``+OK Success\\n``, ``-ERR Operation Failed\\n`` or a ``-USAGE: …`` text)."""

    def heard(self) -> list[Heard]:
        """Everything the caller heard so far, in order."""

    def say(self, samples_8k: NDArray[int16]) -> tuple[float, float]:
        """Queue caller speech (int16, 8000 Hz mono) behind anything already queued; it is
        sent one 20 ms frame per media-clock tick (through the channel's G.711 codec).
        Returns the monotonic times of its first frame and of the end of its last sample.
        Raises ``callctl.sim.media.MediaError`` if the media clock is not running."""
