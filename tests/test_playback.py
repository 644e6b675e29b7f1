"""PlaybackHandle state logic: file mode (sendmsg playback + ESL events) and stream mode
(paced L16 frames + marks on the jambonz fork)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from urllib.parse import quote

import gevent
import numpy as np
import pytest

from callctl.call.timeline import Turn
from callctl.metrics import Metrics
from callctl.playback import FilePlayback, PlaybackError, StreamPlayback, ensure_dir
from callctl.tts.base import AudioChunk, read_wav


def tone(seconds: float, rate: int = 8000, text: str = "") -> AudioChunk:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    return AudioChunk(pcm=pcm, rate=rate, text=text)


class RecordingTransport:
    """Stands in for the call's ESL socket: records commands, checks the file is complete
    when the play command goes out (as FreeSWITCH would open it)."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.plays: list[tuple[str, str]] = []
        self.stops = 0
        self.delay = delay
        self.fail = fail

    def play(self, path: str, event_uuid: str) -> None:
        pcm, rate = read_wav(Path(path))
        assert pcm and rate in (8000, 16000)
        if self.delay:
            gevent.sleep(self.delay)
        if self.fail:
            raise ConnectionError("socket closed")
        self.plays.append((path, event_uuid))

    def stop_playback(self) -> None:
        self.stops += 1

    file_open = True             # what uuid_fileman finds: a file playing, or none
    toggles = 0

    def toggle_pause(self) -> bool:
        if not self.file_open:
            return False             # -ERR No File Handle!
        self.toggles += 1
        return True


def ev(name: str, event_uuid: str, response: str = "FILE PLAYED") -> tuple[str, dict[str, str]]:
    headers = {"Application": "playback", "Application-UUID": event_uuid}
    if name == "CHANNEL_EXECUTE_COMPLETE":
        headers["Application-Response"] = quote(response)
    return name, headers


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    return tmp_path / "playback"


def test_pieces_are_played_in_order_and_files_cleaned_up(pdir: Path, metrics: Metrics) -> None:
    turn = Turn(0)
    turn.mark("tts_first_chunk")
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir, turn=turn, metrics=metrics, call_uuid="c1")
    assert stat.S_IMODE(pdir.stat().st_mode) == 0o750
    for i in range(3):
        h.add(tone(0.2, text=f"piece {i}"))
    assert [Path(p).name.startswith("c1-") for p, _ in tr.plays] == [True] * 3
    assert [u for _p, u in tr.plays] == [p.event_uuid for p in h.pieces]
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o640 for p, _ in tr.plays)
    assert h.cmd_sent is not None and h.started is None
    assert "playback_cmd" in turn.marks

    h.on_event(*ev("CHANNEL_EXECUTE", tr.plays[0][1]))
    assert h.started is not None and "playback_started" in turn.marks
    for path, uuid in tr.plays:
        h.on_event(*ev("CHANNEL_EXECUTE_COMPLETE", uuid))
        assert not Path(path).exists()
    assert not h.done  # more pieces could still come
    h.finish()
    assert h.done and h.wait(0) and not h.interrupted and h.stopped is not None
    assert list(pdir.iterdir()) == []
    hops = {s.labels["hop"] for s in metrics.hop.collect()[0].samples if s.value}
    assert {"playback_start", "play_out"} <= hops


def test_playback_start_matches_the_url_encoded_file_path(pdir: Path) -> None:
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir)
    h.add(tone(0.1))
    h.on_event("PLAYBACK_START", {"Playback-File-Path": quote(tr.plays[0][0])})
    assert h.started is not None


def test_unrelated_events_are_ignored(pdir: Path) -> None:
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir)
    h.add(tone(0.1))
    h.finish()
    h.on_event(*ev("CHANNEL_EXECUTE_COMPLETE", "someone-else"))
    h.on_event("CHANNEL_ANSWER", {})
    h.on_event("PLAYBACK_START", {"Playback-File-Path": "/other.wav"})
    assert not h.done and h.started is None


def test_interrupt_cuts_stops_and_deletes(pdir: Path) -> None:
    turn = Turn(0)
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir, turn=turn)
    stopped: list[int] = []
    h.add_stop_callback(lambda: stopped.append(1))
    for text in ("One.", "Two.", "Three."):
        h.add(tone(0.2, text=text))
    h.on_event(*ev("CHANNEL_EXECUTE", tr.plays[0][1]))
    h.on_event(*ev("CHANNEL_EXECUTE_COMPLETE", tr.plays[0][1]))
    h.on_event(*ev("CHANNEL_EXECUTE", tr.plays[1][1]))
    assert h.interrupt() is True
    assert tr.stops == 1 and h.interrupted and h.done and stopped == [1]
    assert h.cut_index == 1 and h.cut_text == "Two." and h.remaining_text() == "Two. Three."
    assert "playback_interrupted" in turn.marks
    assert list(pdir.iterdir()) == []
    # Late events from the switch and a second interrupt are harmless.
    h.on_event(*ev("CHANNEL_EXECUTE_COMPLETE", tr.plays[1][1]))
    assert h.interrupt() is False and tr.stops == 1
    h.add(tone(0.1))
    assert len(tr.plays) == 3


def test_interrupt_after_the_end_is_a_no_op(pdir: Path) -> None:
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir)
    h.add(tone(0.1))
    h.finish()
    h.on_event(*ev("CHANNEL_EXECUTE_COMPLETE", tr.plays[0][1]))
    assert h.interrupt() is False
    assert tr.stops == 0 and not h.interrupted


def test_interrupt_racing_the_last_completion(pdir: Path) -> None:
    """The break goes out, then the switch reports the piece complete: still one stop, the
    handle stays interrupted, nothing left on disk."""
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir)
    h.add(tone(0.1, text="Only."))
    h.finish()
    h.on_event(*ev("CHANNEL_EXECUTE", tr.plays[0][1]))
    racer = gevent.spawn(h.on_event, *ev("CHANNEL_EXECUTE_COMPLETE", tr.plays[0][1]))
    assert h.interrupt() is True
    racer.join(1)
    assert h.interrupted and h.done and tr.stops == 1 and h.cut_text == "Only."
    assert list(pdir.iterdir()) == []


def test_interrupt_while_a_play_command_is_in_flight(pdir: Path) -> None:
    tr = RecordingTransport(delay=0.05)
    h = FilePlayback(tr, pdir)
    adder = gevent.spawn(h.add, tone(0.1))
    gevent.sleep(0.01)
    assert h.interrupt() is True
    adder.join(1)
    assert adder.successful()
    assert list(pdir.iterdir()) == [] and h.cmd_sent is None


def test_file_not_found_at_the_switch_is_reported_and_ends(pdir: Path) -> None:
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir)
    h.add(tone(0.1))
    h.finish()
    h.on_event(*ev("CHANNEL_EXECUTE", tr.plays[0][1]))
    h.on_event(*ev("CHANNEL_EXECUTE_COMPLETE", tr.plays[0][1], "FILE NOT FOUND"))
    assert h.done and h.errors and "FILE NOT FOUND" in h.errors[0]


def test_swept_playback_dir_is_recreated(pdir: Path) -> None:
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir)
    pdir.rmdir()
    h.add(tone(0.1))
    assert Path(tr.plays[0][0]).exists()


def test_unusable_dir_and_failed_command_are_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PlaybackError, match=r"cannot create playback\.dir"):
        ensure_dir(blocker / "sub")
    h = FilePlayback(RecordingTransport(fail=True), tmp_path / "pb")
    with pytest.raises(PlaybackError, match="playback command failed"):
        h.add(tone(0.1))
    assert list((tmp_path / "pb").iterdir()) == []


def test_close_on_hangup_sends_nothing_and_deletes(pdir: Path) -> None:
    tr = RecordingTransport()
    h = FilePlayback(tr, pdir)
    stopped: list[int] = []
    h.add_stop_callback(lambda: stopped.append(1))
    h.add(tone(0.1))
    h.add(tone(0.1))
    h.close()
    assert tr.stops == 0 and h.done and not h.interrupted and stopped == [1]
    assert list(pdir.iterdir()) == []
    assert h.interrupt() is False


# -- stream mode --------------------------------------------------------------------------


class Fork:
    """The daemon side of a jambonz fork WebSocket: what was sent, when."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.texts: list[str] = []

    def send_binary(self, pcm: bytes) -> None:
        self.frames.append((time.monotonic(), pcm))

    def send_text(self, text: str) -> None:
        self.texts.append(text)

    def marks(self) -> list[str]:
        return [json.loads(t)["data"]["name"] for t in self.texts
                if json.loads(t)["type"] == "mark"]


def test_stream_sends_paced_frames_and_marks() -> None:
    fork = Fork()
    turn = Turn(0)
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, turn=turn, lead_ms=60,
                       tail_ms=100)
    h.add(tone(0.3, text="one"))
    h.add(tone(0.2, text="two"))
    h.finish()
    gevent.sleep(0.7)
    assert not h.done  # waits for the playout marks
    # 0.5 s of reply, then 100 ms of silence so the module's pre-buffer lets the tail out
    assert sum(len(f) for _t, f in fork.frames) == int(0.6 * 8000) * 2
    assert all(len(f) == 320 for _t, f in fork.frames)
    assert not any(fork.frames[-1][1])
    assert fork.marks() == [p.event_uuid for p in h.pieces]
    span = fork.frames[-1][0] - fork.frames[0][0]
    assert span > 0.3  # paced, not dumped (0.5 s of audio, 60 ms lead)
    assert h.cmd_sent == turn.marks["playback_cmd"] == pytest.approx(fork.frames[0][0], abs=0.01)
    assert h.started is None               # not before the module says it played something
    for name in fork.marks():
        h.on_fork_message({"type": "mark", "data": {"name": name, "event": "playout"}})
    assert h.done and not h.interrupted
    # back-dated from the first mark by the first piece's 0.3 s, never before the first frame
    assert h.started == turn.marks["playback_started"]
    assert h.cmd_sent <= h.started <= h.stopped - 0.3 + 1e-6


def test_stream_interrupt_kills_audio_and_stops_frames() -> None:
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, lead_ms=40)
    h.add(tone(2.0, text="long"))
    gevent.sleep(0.1)
    assert h.interrupt() is True
    n = len(fork.frames)
    gevent.sleep(0.1)
    assert len(fork.frames) == n < 100
    assert fork.texts[-2:] == ['{"type":"killAudio"}', '{"type":"clearMarks"}']
    assert h.cut_text == "long"
    # cut before any mark came back: the first frame plus the module's pre-buffer
    assert h.cmd_sent is not None and h.started == pytest.approx(h.cmd_sent + 0.04)
    # The module reports the pending mark as cleared: ignored.
    h.on_fork_message({"type": "mark", "data": {"name": h.pieces[0].event_uuid,
                                                "event": "cleared"}})
    assert h.interrupted


def test_stream_without_mark_echo_still_ends() -> None:
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 16000, lead_ms=200, mark_grace_s=0.05,
                       tail_ms=0)
    h.add(tone(0.1, rate=8000))  # resampled to the stream's rate
    h.finish()
    assert h.wait(2.0)
    assert all(len(f) == 640 for _t, f in fork.frames[:-1])
    assert sum(len(f) for _t, f in fork.frames) == 1600 * 2


def test_stream_marks_missing_is_flagged_logged_and_counted(metrics: Metrics,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, metrics=metrics, lead_ms=200,
                       mark_grace_s=0.05, tail_ms=0, call_uuid="u-missing")
    h.add(tone(0.1))
    h.add(tone(0.1))
    h.finish()
    assert h.wait(5.0)
    assert h.marks_missing and h.marks_back == 0 and not h.interrupted
    assert metrics.registry.get_sample_value("callctl_playback_marks_missing_total") == 1
    out = capsys.readouterr().out
    assert "playback_marks_missing" in out and "u-missing" in out


def test_stream_whose_marks_came_back_is_not_marks_missing(metrics: Metrics) -> None:
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, metrics=metrics, lead_ms=200,
                       tail_ms=0)
    h.add(tone(0.1))
    h.finish()
    with gevent.Timeout(5):
        while not fork.marks():
            gevent.sleep(0.01)
    h.on_fork_message({"type": "mark", "data": {"name": fork.marks()[0], "event": "playout"}})
    assert h.done and not h.marks_missing and h.marks_back == 1
    assert not metrics.registry.get_sample_value("callctl_playback_marks_missing_total")


def test_stream_ignores_other_messages() -> None:
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000)
    h.on_fork_message({"type": "transcription", "data": {}})
    h.on_fork_message({"type": "mark", "data": "bad"})
    h.on_fork_message({"type": "mark", "data": {"name": "unknown", "event": "playout"}})
    assert not h.done
    h.close()
    assert h.done


def test_stream_to_a_gone_fork_ends_with_an_error() -> None:
    texts: list[str] = []
    h = StreamPlayback(lambda pcm: False, lambda t: texts.append(t), 8000)
    h.add(tone(0.5))
    h.finish()
    assert h.wait(1.0)
    assert h.errors == ["fork WebSocket gone"] and h.cmd_sent is None


def two_pieces(pdir: Path) -> tuple[RecordingTransport, FilePlayback, str, str]:
    """A file handle with two 0.3 s pieces queued at the switch (their application UUIDs)."""
    t = RecordingTransport()
    h = FilePlayback(t, pdir)
    h.add(tone(0.3, text="one"))
    h.add(tone(0.3, text="two"))
    first, second = (u for _, u in t.plays)
    return t, h, first, second


def test_pause_and_unpause_toggle_once_each(pdir: Path) -> None:
    t = RecordingTransport()
    h = FilePlayback(t, pdir)
    h.add(tone(0.5, text="one"))
    h.on_event(*ev("CHANNEL_EXECUTE", t.plays[0][1]))
    assert h.pause() and h.paused and h.switch_paused and t.toggles == 1
    assert not h.pause() and t.toggles == 1                  # never a second toggle
    assert h.unpause() and not h.paused and not h.switch_paused and t.toggles == 2
    assert not h.unpause() and t.toggles == 2
    assert h.pauses == 1 and not h.done


def test_pause_between_pieces_is_sent_when_the_next_piece_starts(pdir: Path) -> None:
    t, h, first, second = two_pieces(pdir)
    h.on_event(*ev("CHANNEL_EXECUTE", first))
    h.on_event(*ev("CHANNEL_EXECUTE_COMPLETE", first))
    t.file_open = False                                      # between the two files
    assert h.pause() and h.paused and not h.switch_paused and t.toggles == 0
    t.file_open = True
    h.on_event(*ev("CHANNEL_EXECUTE", second))               # the new file starts unpaused
    assert h.switch_paused and t.toggles == 1
    h.on_event("PLAYBACK_START", {"Playback-File-Path": quote(str(h.pieces[1].path))})
    assert t.toggles == 1                                    # already paused: no toggle back


def test_a_piece_ending_while_paused_keeps_the_pause_on_the_next_file(pdir: Path) -> None:
    """A paused file cannot end: if one completes after our +OK, the toggle landed on the
    next file, which stays paused (no re-toggle on its start events)."""
    t, h, first, second = two_pieces(pdir)
    h.on_event(*ev("CHANNEL_EXECUTE", first))
    assert h.pause() and t.toggles == 1
    h.on_event(*ev("CHANNEL_EXECUTE_COMPLETE", first))
    h.on_event(*ev("CHANNEL_EXECUTE", second))
    assert h.switch_paused and t.toggles == 1
    assert h.unpause() and t.toggles == 2


def test_interrupt_while_paused_breaks_and_forgets_the_pause(pdir: Path) -> None:
    t = RecordingTransport()
    h = FilePlayback(t, pdir)
    h.add(tone(0.5, text="one"))
    h.add(tone(0.5, text="two"))
    h.on_event(*ev("CHANNEL_EXECUTE", t.plays[0][1]))
    assert h.pause()
    assert h.interrupt() and t.stops == 1 and h.done and h.interrupted
    assert not h.paused and h.cut_text == "one" and not list(pdir.iterdir())
    assert not h.unpause() and t.toggles == 1                # nothing left to unpause


def test_stream_pause_drops_the_module_buffer_and_goes_on_from_the_unheard_audio() -> None:
    """Pause: killAudio, nothing sent while paused; unpause: the frames from the one the
    caller was hearing (by the pacing clock) are sent again, in order, then the piece's mark
    again (killAudio cleared it in the module). A 2 s lead: all of it was sent at once."""
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, lead_ms=2000, tail_ms=0)
    samples = np.repeat(np.arange(1, 51, dtype=np.int16), 160)       # frame k holds k
    h.add(AudioChunk(samples.tobytes(), 8000, "one"))
    h.finish()
    gevent.sleep(0.3)
    assert h.can_pause and h.pause() and h.paused
    paused_at, sent = time.monotonic(), len(fork.frames)
    assert fork.texts[-1] == '{"type":"killAudio"}'
    gevent.sleep(0.15)
    assert len(fork.frames) == sent                                  # silent while paused
    assert h.unpause() and not h.paused
    deadline = time.monotonic() + 3
    while fork.marks().count(h.pieces[0].event_uuid) < 2 and time.monotonic() < deadline:
        gevent.sleep(0.02)
    values = [int(np.frombuffer(f, "<i2")[0]) for _t, f in fork.frames]
    heard = int((paused_at - fork.frames[0][0]) / 0.02) + 1         # playing at the pause
    again = values[sent:]
    assert heard - 2 <= again[0] <= heard, (heard, values)           # ~a frame repeated
    assert again == list(range(again[0], 51))                        # then on, in order
    assert values[:sent] == list(range(1, 51))                      # the lead: everything
    assert fork.marks() == [h.pieces[0].event_uuid] * 2              # the mark, sent again
    h.on_fork_message({"type": "mark", "data": {"name": h.pieces[0].event_uuid,
                                                "event": "playout"}})
    assert h.done and not h.interrupted and h.pauses == 1


def test_stream_pause_then_interrupt_sends_nothing_more() -> None:
    fork = Fork()
    h = StreamPlayback(fork.send_binary, fork.send_text, 8000, lead_ms=60)
    h.add(tone(1.0, text="long"))
    gevent.sleep(0.1)
    assert h.pause()
    sent = len(fork.frames)
    assert h.interrupt() and h.done and not h.paused and h.cut_text == "long"
    gevent.sleep(0.1)
    assert len(fork.frames) == sent
    assert fork.texts[-3:] == ['{"type":"killAudio"}', '{"type":"killAudio"}',
                               '{"type":"clearMarks"}']


def test_stream_pause_on_a_gone_fork_is_an_error_and_ends_the_reply() -> None:
    frames: list[bytes] = []
    h = StreamPlayback(lambda pcm: frames.append(pcm), lambda t: False, 8000)
    h.add(tone(0.5))
    gevent.sleep(0.05)
    with pytest.raises(PlaybackError):
        h.pause()
    assert h.done and h.errors == ["fork WebSocket gone"]
