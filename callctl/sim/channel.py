"""One emulated FreeSWITCH channel: its state, variables, dialplan and applications.

How this works: one greenlet (``Channel.run``) owns the channel, like FreeSWITCH's session
thread. It fires the creation events, runs the dialplan (``park`` = answer + park, as in the
captures' dialplan; ``socket host:port async full`` = outbound ESL session, then park), and
while parked takes *private messages* (sendmsg execute/hangup, uuid_broadcast) from its
bounded inbox, one at a time. Other greenlets (ESL connections, the caller's script) only put
messages in the inbox or call ``hangup``; hangup fires CHANNEL_HANGUP at once, then the owner
greenlet unwinds (CHANNEL_UNPARK, CHANNEL_EXECUTE_COMPLETE) and reports (CHANNEL_STATE,
CHANNEL_CALLSTATE, CHANNEL_HANGUP_COMPLETE), waits for session-bound sockets (outbound, or
inbound after ``myevents <uuid>``) to let go — a lingering one holds it until ``exit`` —
and is destroyed (CHANNEL_DESTROY).

Simplification (documented gap): a second queued ``execute`` without ``event-lock`` runs after
the current application instead of nested inside it.
"""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.queue

from callctl.log import get_logger
from callctl.sim import chanvars
from callctl.sim.events import HANGUP_CAUSES, STATE_NUMBERS, Event, Header
from callctl.sim.interfaces import ChannelMedia, Heard, PlayResult

if TYPE_CHECKING:
    from callctl.sim.eslconn import EslConnection
    from callctl.sim.outbound import OutboundSession
    from callctl.sim.switch import Switch

CODECS = {"PCMU": (8000, 64000, 0), "PCMA": (8000, 64000, 8), "G722": (16000, 64000, 9),
          "L16": (16000, 256000, 96)}
INBOX_MAX = 1000
PLAY_RESPONSES = {"done": "FILE PLAYED", "break": "FILE PLAYED",
                  "notfound": "FILE NOT FOUND", "error": "PLAYBACK ERROR"}


@dataclass(frozen=True)
class PrivateMessage:
    """A queued call command (sendmsg / uuid_broadcast), as FreeSWITCH's private event."""

    command: str                          # execute | hangup | wake
    app: str = ""
    arg: str = ""
    event_uuid: str | None = None
    event_lock: bool = False
    loops: int = 1
    cause: str = "NORMAL_CLEARING"
    broadcast: bool = False
    prefix: tuple[Header, ...] = field(default=())   # headers PRIVATE_COMMAND starts with


WAKE = PrivateMessage("wake")


class Channel:
    """An inbound call leg (implements ``interfaces.ChannelSignals`` and ``events.ChannelData``).

    Thread model: gevent only; ``run`` is the owner greenlet, every other method may be called
    from any greenlet.
    """

    def __init__(self, switch: Switch, did: str, caller_id: str, codec: str) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r} (one of {sorted(CODECS)})")
        self.switch = switch
        self.uuid = str(uuidlib.uuid4())
        self.did = did
        self.caller_id = caller_id
        self.codec_name = codec
        self.rate, bit_rate, self.pt = CODECS[codec]
        self.name = f"sofia/external/{caller_id}@127.0.0.1:5070"
        self.log = get_logger(call_uuid=self.uuid)
        # --- ChannelData
        self.state = "CS_NEW"
        self.state_number = 0
        self.call_state = "DOWN"
        self.answer_state = "ringing"
        self.hangup_cause: str | None = None
        self.codec: tuple[str, int, int] | None = None
        self._codec_info = (codec, self.rate, bit_rate)
        self.show_profile = False
        self.created_us = int(time.time() * 1_000_000)
        self.answered_us = 0
        self.hangup_us = 0
        self._disposition = "send_bye"
        self._play_started = time.monotonic()
        self.profile: dict[str, str] = {}
        self.variables: dict[str, str] = {}
        self._init_profile_and_vars()
        # --- runtime
        self.event_names: list[str] = []
        self.inbox: gevent.queue.Queue[PrivateMessage] = gevent.queue.Queue(INBOX_MAX)
        self.answered = gevent.event.Event()
        self.hungup = gevent.event.Event()
        self.destroyed = gevent.event.Event()
        self.current_app = ""
        self.current_app_data = ""
        self.executing: str | None = None
        self.outbound: OutboundSession | None = None
        self.bound: list[EslConnection] = []      # session-bound sockets (hold the session)
        self.controlled = False
        self.transfer_to: tuple[str, str] | None = None
        self.inline_actions: list[tuple[str, str]] | None = None
        self.actions_left = 0          # dialplan actions after the one running
        self.recordings: dict[str, tuple[float, int]] = {}
        self.media: ChannelMedia = _new_media(self, codec, self.rate, switch.cfg.speed)
        self.greenlet: gevent.Greenlet[Any] | None = None

    # ------------------------------------------------------------------ data

    def _init_profile_and_vars(self) -> None:
        self.profile = chanvars.initial_profile(self.uuid, self.caller_id, self.did, self.name,
                                                self.created_us)
        self.variables = dict(chanvars.initial_variables(
            self.uuid, self.caller_id, self.did, self.name, self.created_us,
            self.switch.session_count + 1, self.codec_name, self.rate, self.pt))

    def set_var(self, name: str, value: str | None) -> None:
        """FreeSWITCH semantics: setting deletes then appends (the variable moves to the end);
        an empty or None value unsets."""
        self.variables.pop(name, None)
        if value:
            self.variables[name] = value

    def is_up(self) -> bool:
        return self.hangup_cause is None

    # ------------------------------------------------------------------ events

    def fire(self, ev: Event) -> None:
        self.event_names.append(ev.name if ev.subclass is None else f"CUSTOM {ev.subclass}")
        self.switch.dispatch(ev)

    def _fire(self, name: str, **kw: Any) -> None:
        self.fire(self.switch.factory.channel_event(name, self, **kw))

    def fire_event(self, name: str, headers: dict[str, str]) -> None:
        """ChannelSignals: a channel event with extra headers after the channel data.
        PLAYBACK_* of a ``tone_stream://`` / ``local_stream://`` get ``Playback-File-Type``
        first, as FreeSWITCH adds it."""
        after = list(headers.items())
        path = headers.get("Playback-File-Path", "")
        kind = path.partition("://")[0]
        if name.startswith("PLAYBACK_") and kind in ("tone_stream", "local_stream") \
                and "Playback-File-Type" not in headers:
            after.insert(0, ("Playback-File-Type", kind))
        if name == "PLAYBACK_START":
            self._play_started = time.monotonic()
        elif name == "PLAYBACK_STOP":
            ms = int((time.monotonic() - self._play_started) * self.switch.cfg.speed * 1000)
            samples = ms * self.rate // 1000
            for k, v in (("playback_last_offset_pos", samples), ("playback_seconds", ms // 1000),
                         ("playback_ms", ms), ("playback_samples", samples)):
                self.set_var(k, str(v))
        self._fire(name, after=after)

    def fire_custom(self, subclass: str, body: str | None) -> None:
        """ChannelSignals: CUSTOM event, Event-Subclass first, channel data, raw body."""
        self._fire("CUSTOM", subclass=subclass, body=body, where="CUSTOM")

    def _set_state(self, state: str, number: int | None = None) -> None:
        self.state = state
        self.state_number = STATE_NUMBERS[state] if number is None else number
        self._fire("CHANNEL_STATE")

    def _set_callstate(self, call_state: str) -> None:
        from callctl.sim.events import CALLSTATE_NUMBERS
        old, self.call_state = self.call_state, call_state
        self._fire("CHANNEL_CALLSTATE", before=[
            ("Original-Channel-Call-State", old),
            ("Channel-Call-State-Number", str(CALLSTATE_NUMBERS[call_state]))])

    # ------------------------------------------------------------------ caller side

    def dtmf(self, digit: str, duration_samples: int = 2000) -> None:
        """ChannelSignals: the caller pressed ``digit`` (DTMF, RTP source, no variables)."""
        if digit not in "0123456789*#ABCD" or len(digit) != 1:
            raise ValueError(f"bad DTMF digit {digit!r}")
        if not self.is_up():
            return
        self._fire("DTMF", after=[("DTMF-Digit", digit),
                                  ("DTMF-Duration", str(duration_samples)),
                                  ("DTMF-Source", "RTP")])
        terminators = self.variables.get("playback_terminators", "*")
        if terminators == "any":
            terminators = "1234567890*#"
        elif terminators == "none":
            terminators = ""
        if self.executing == "playback" and digit in terminators:
            self.set_var("playback_terminator_used", digit)
            self.media.break_playback(False)

    def caller_hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """ChannelSignals: the caller sent BYE."""
        self.hangup(cause, disposition="recv_bye")

    def heard(self) -> list[Heard]:
        return self.media.heard()

    # ------------------------------------------------------------------ control

    def hangup(self, cause: str = "NORMAL_CLEARING", disposition: str = "send_bye") -> None:
        """Start hanging up (idempotent). Fires CHANNEL_HANGUP now; the owner greenlet does
        the rest."""
        if self.hangup_cause is not None:
            return
        if cause not in HANGUP_CAUSES:
            cause = "NORMAL_CLEARING"
        self.hangup_cause = cause
        self.hangup_us = int(time.time() * 1_000_000)
        self.profile["Channel-Hangup-Time"] = str(self.hangup_us)
        self.state_number = STATE_NUMBERS["CS_HANGUP"]
        self.answer_state = "hangup"
        if disposition == "recv_bye":
            for k, v in chanvars.bye_dialog_variables(self.variables, self.did):
                self.set_var(k, v)
            self.set_var("sip_term_status", "200")
            self.set_var("proto_specific_hangup_cause", "sip:200")
            self.set_var("sip_term_cause", str(HANGUP_CAUSES[cause]))
        self._fire("CHANNEL_HANGUP")
        self._disposition = disposition
        if disposition == "recv_bye":      # sofia marks a received BYE at once; send_bye later
            self.set_var("sip_hangup_disposition", disposition)
        self.media.stop()
        self.hungup.set()
        self._wake()

    def _wake(self) -> None:
        try:
            self.inbox.put_nowait(WAKE)
        except gevent.queue.Full:
            pass          # the owner polls ``hungup`` anyway

    def enqueue(self, msg: PrivateMessage) -> bool:
        """Queue a call command; False if the channel is gone or the inbox is full."""
        if not self.is_up():
            return False
        try:
            self.inbox.put_nowait(msg)
        except gevent.queue.Full:
            self.log.warning("sim.inbox_full", dropped=msg.command)
            return False
        return True

    def flush_inbox(self) -> None:
        """uuid_break all: discard queued commands."""
        while True:
            try:
                self.inbox.get_nowait()
            except gevent.queue.Empty:
                return

    def answer(self) -> bool:
        if not self.is_up():
            return False
        if self.answer_state == "answered":
            return True
        self.answered_us = int(time.time() * 1_000_000)
        self.profile["Channel-Answered-Time"] = str(self.answered_us)
        self.answer_state = "answered"
        for k, v in chanvars.answer_variables(self.pt):
            self.set_var(k, v)
        self._fire("CHANNEL_ANSWER")
        self._set_callstate("ACTIVE")
        self.set_var("endpoint_disposition", "ANSWER")
        self.media.start()
        self.answered.set()
        return True

    def pre_answer(self) -> bool:
        """Early media: CHANNEL_PROGRESS_MEDIA, call state EARLY, the media clock starts."""
        if not self.is_up():
            return False
        if self.answer_state in ("early", "answered"):
            return True
        self.profile["Channel-Progress-Media-Time"] = str(int(time.time() * 1_000_000))
        self.answer_state = "early"
        self._fire("CHANNEL_PROGRESS_MEDIA", where="CHANNEL_PROGRESS_MEDIA")
        self._set_callstate("EARLY")
        self.media.start()
        return True

    def release_control(self) -> None:
        """The outbound socket went away: ``park`` ends, the dialplan goes on."""
        self.controlled = False
        self._wake()

    def transfer(self, dest: str, dialplan: str = "XML") -> None:
        self.transfer_to = (dest, dialplan)
        self.profile["Channel-Transfer-Time"] = str(int(time.time() * 1_000_000))
        self._wake()

    # ------------------------------------------------------------------ owner greenlet

    def run(self) -> None:
        """The session thread: create, route, execute, report, destroy."""
        try:
            self._create()
            actions = self.inline_actions or self.switch.route(self.did)
            while True:
                for i, (app, arg) in enumerate(actions):
                    if not self.is_up() or self.transfer_to:
                        break
                    self.actions_left = len(actions) - i - 1
                    self.execute(app, arg)
                if self.transfer_to and self.is_up():
                    dest, dialplan = self.transfer_to
                    self.transfer_to = None
                    if self.outbound is not None:
                        self.outbound.close()
                        self.outbound = None      # the new extension is not socket-controlled
                    actions = self.switch.route(dest, dialplan)
                    self.profile["Destination-Number"] = dest
                    continue
                break
            if self.is_up():
                self.log.info("sim.last_dialplan_instruction")
                self.hangup("NORMAL_CLEARING")
        except Exception:
            self.log.exception("sim.channel_crashed")
            self.hangup("NORMAL_TEMPORARY_FAILURE")
        finally:
            self._report_and_destroy()

    def _create(self) -> None:
        self._set_state("CS_NEW")
        self.codec = self._codec_info
        self.show_profile = True
        cname, rate, bits = self._codec_info
        self._fire("CODEC", where="CODEC_READ", variables=False, after=[
            ("channel-read-codec-name", cname), ("channel-read-codec-rate", str(rate)),
            ("channel-read-codec-bit-rate", str(bits))])
        self._fire("CODEC", where="CODEC_WRITE", variables=False, after=[
            ("Channel-Write-Codec-Name", cname), ("Channel-Write-Codec-Rate", str(rate)),
            ("Channel-Write-codec-bit-rate", str(bits))])
        self._set_state("CS_INIT")
        self.state_number = STATE_NUMBERS["CS_ROUTING"]
        self._fire("CHANNEL_CREATE")
        self.state = "CS_ROUTING"
        self._set_callstate("RINGING")
        self._set_state("CS_ROUTING")
        self._set_state("CS_EXECUTE")
        self.set_var("call_uuid", self.uuid)

    def execute(self, app: str, arg: str = "", app_uuid: str | None = None,
                broadcast: bool = False) -> bool:
        """Run one dialplan application with CHANNEL_EXECUTE / _COMPLETE around it.
        Returns False (no events) for an unknown application."""
        fn = APPS.get(app)
        if fn is None:
            self.log.warning("sim.invalid_application", app=app)
            return False
        app_uuid = app_uuid or str(uuidlib.uuid4())
        # switch_core_session_exec: app, data, CHANNEL_EXECUTE, then app set once more
        self.set_var("current_application", app)
        self.set_var("current_application_data", arg)
        self.current_app, self.current_app_data = app, arg
        info: list[Header] = [("Application", app)]
        if arg:
            info.append(("Application-Data", arg))
        self._fire("CHANNEL_EXECUTE", after=[*info, ("Application-UUID", app_uuid)])
        self.set_var("current_application", app)
        outer, self.executing = self.executing, app
        try:
            fn(self, arg, broadcast)
        finally:
            self.executing = outer
        response = self.variables.get("current_application_response") or "_none_"
        self._fire("CHANNEL_EXECUTE_COMPLETE", after=[
            *info, ("Application-Response", response), ("Application-UUID", app_uuid)])
        return True

    def park_loop(self) -> None:
        """``switch_ivr_park``: CHANNEL_PARK, serve the inbox until hangup / transfer / (for
        an outbound socket) release of control, CHANNEL_UNPARK."""
        self._fire("CHANNEL_PARK")
        idle_read = False
        while self.is_up() and not self.transfer_to and (
                self.outbound is None or self.controlled):
            if not idle_read and self.answer_state in ("early", "answered"):
                # switch_ivr_park reads send_silence_when_idle once, when the media is up
                idle_read = True
                self.media.write_idle_frames(
                    _nonzero(self.variables.get("send_silence_when_idle")))
            try:
                msg = self.inbox.get(timeout=0.5)
            except gevent.queue.Empty:
                continue
            if msg.command != "wake":
                self.process(msg)
        self.media.write_idle_frames(False)
        self._fire("CHANNEL_UNPARK")

    def process(self, msg: PrivateMessage) -> None:
        """Run one private message, then fire PRIVATE_COMMAND (sendmsg headers first)."""
        if msg.command == "execute":
            self.set_var("current_loop", "1")
            self.set_var("total_loops", str(msg.loops))
            for i in range(max(1, msg.loops)):
                if not self.is_up():
                    break
                if i:
                    self.set_var("current_loop", str(i + 1))
                self.execute(msg.app, msg.arg, msg.event_uuid, msg.broadcast)
            self.set_var("current_loop", None)
            self.set_var("total_loops", None)
        elif msg.command == "hangup":
            self.hangup(msg.cause)
        ev = self.switch.factory.channel_event("PRIVATE_COMMAND", self)
        self.fire(Event(ev.name, msg.prefix + ev.headers))

    def _report_and_destroy(self) -> None:
        self.media.stop()
        for path in list(self.recordings):
            stop_recording(self, path)
        self.state = "CS_HANGUP"
        self._set_state("CS_HANGUP")
        self._set_callstate("HANGUP")
        self._set_state("CS_REPORTING")
        if "sip_hangup_disposition" not in self.variables:
            self.set_var("sip_hangup_disposition", self._disposition)
        for k, v in chanvars.cdr_variables(
                self.hangup_cause or "NORMAL_CLEARING", self.created_us, self.answered_us,
                self.hangup_us or int(time.time() * 1_000_000), self.current_app,
                self.current_app_data, self.caller_id, self.rate):
            self.set_var(k, v)
        self._fire("CHANNEL_HANGUP_COMPLETE", before=[("Hangup-Cause", self.hangup_cause or "")])
        for conn in self.bound:
            conn.channel_done()
        gevent.wait([conn.released for conn in self.bound], timeout=self.switch.max_linger_s)
        self.state_number = STATE_NUMBERS["CS_DESTROY"]
        self._fire("CHANNEL_DESTROY")
        self.state = "CS_DESTROY"
        self._fire("CHANNEL_STATE")
        self.switch.forget(self)
        self.destroyed.set()

# ---------------------------------------------------------------------- applications

def _nonzero(value: str | None) -> bool:
    """FreeSWITCH's ``atoi(value) != 0``."""
    m = re.match(r"\s*[-+]?\d+", value or "")
    return m is not None and int(m.group()) != 0


def _app_answer(ch: Channel, arg: str, broadcast: bool) -> None:
    ch.answer()


def _app_pre_answer(ch: Channel, arg: str, broadcast: bool) -> None:
    ch.pre_answer()


def _app_park(ch: Channel, arg: str, broadcast: bool) -> None:
    ch.park_loop()


def _app_playback(ch: Channel, arg: str, broadcast: bool) -> None:
    result: PlayResult = ch.media.play(arg, broadcast=broadcast) if ch.is_up() else "error"
    ch.set_var("current_application_response", PLAY_RESPONSES.get(result, "PLAYBACK ERROR"))


def _app_hangup(ch: Channel, arg: str, broadcast: bool) -> None:
    ch.hangup(arg.strip() or "NORMAL_CLEARING")


def _app_set(ch: Channel, arg: str, broadcast: bool) -> None:
    name, _, value = arg.partition("=")
    if name:
        ch.set_var(name.strip(), value)


def _app_sleep(ch: Channel, arg: str, broadcast: bool) -> None:
    try:
        ms = int(arg)
    except ValueError:
        return
    ch.hungup.wait(timeout=ms / 1000 / max(ch.switch.cfg.speed, 1e-3))


def _app_socket(ch: Channel, arg: str, broadcast: bool) -> None:
    from callctl.sim.outbound import run_socket_app
    run_socket_app(ch, arg)


def stop_recording(ch: Channel, path: str) -> bool:
    """Finish one ``uuid_record`` (writes the WAV, fires RECORD_STOP)."""
    from callctl.sim.api import finish_recording
    return finish_recording(ch, path)


APPS: Mapping[str, Callable[[Channel, str, bool], None]] = {
    "answer": _app_answer, "pre_answer": _app_pre_answer, "park": _app_park,
    "playback": _app_playback, "hangup": _app_hangup, "set": _app_set, "sleep": _app_sleep,
    "socket": _app_socket,
}


def _new_media(ch: Channel, codec: str, rate: int, speed: float) -> ChannelMedia:
    from callctl.sim.media import new_media
    media: ChannelMedia = new_media(signals=ch, codec=codec, rate=rate, speed=speed)
    return media
