"""CallSession: the ONE greenlet that owns a call, from the ``connect`` reply to ``exit``.

How this works: everything that concerns the call arrives as a message in the session's
bounded ``Inbox`` — the call's ESL events (put by the connection's dispatch greenlet through
``event_sink``), media events (``post_media``), timers (``call_later``) and requests from
elsewhere (``request_hangup``/``request_transfer``: daemon drain, NOC). Control messages are
always taken before media ones; media overflow drops the oldest frame and counts it; a
hangup can never be dropped (it has its own slot). ``run()`` answers, plays the route's
greeting, then takes messages one by one, drives ``CallStateMachine`` and hands every
channel event and media event to the ``Conversation`` (the dialog loop written elsewhere).
The caller hanging up in any state, the socket closing, a switch that stops answering, or an
illegal transition each end *this* call, with one ``call.end`` log line (cause, duration).

Idle frames (``idle_frames=True``, stream playback): the jambonz fork plays streamed audio
only into frames the channel writes (a WRITE_REPLACE media bug), and a channel parked by the
socket app writes none while nothing plays unless ``send_silence_when_idle`` is set. The
park loop reads that variable ONCE, when the channel's media becomes ready (at answer). So
before answering, the session sets ``send_silence_when_idle=-1`` (digital silence) unless the
dialplan set a level; ``writes_idle_frames`` then says whether the channel will write frames
(False for a call that arrived answered or with early media without it: too late to set).
"""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import gevent
import gevent.event

from callctl.call.control import (
    CallCommandRefused,
    CallControl,
    CallControlError,
    CallControlTimeout,
    CallGone,
)
from callctl.call.state import CallState, CallStateMachine, IllegalTransition, Trigger
from callctl.config import RouteConfig
from callctl.esl.adapter import EslEvent, OutboundConnection
from callctl.log import get_logger
from callctl.metrics import Metrics

CONTROL_INBOX = 1000      # ESL events/requests waiting for the session
MEDIA_INBOX = 500         # media events (audio frames etc.) waiting for the session
MUST_EXTRA = 200          # room past CONTROL_INBOX for messages that must not be lost
IDLE_TICK_S = 1.0         # the loop wakes at least this often (deadlines)


# ---------------------------------------------------------------- messages ---------------


@dataclass(frozen=True)
class HangupRequested:
    """Someone (drain, NOC, dialog) wants the call ended with ``cause``."""

    cause: str = "NORMAL_CLEARING"


@dataclass(frozen=True)
class TransferRequested:
    """Someone wants the call transferred to ``destination`` (extension or SIP URI)."""

    destination: str


@dataclass(frozen=True)
class ReleaseRequested:
    """Stop driving the call WITHOUT hanging it up (another node took it over): the session
    ends with ``cause`` and sends ``exit``, so FreeSWITCH's dialplan goes on."""

    cause: str


@dataclass(frozen=True)
class TimerFired:
    """A timer set with ``CallSession.call_later`` went off."""

    must_deliver: ClassVar[bool] = True    # see ``Inbox.put_control``
    name: str


class Conversation(Protocol):
    """The dialog loop of one call (ASR → turns → dialog → TTS → playback), plugged in.

    All three hooks run in the session's greenlet, one at a time: they may use
    ``call.control`` (every action is bounded by a timeout) and ``call.transition``, but must
    not block for long. ``on_event`` receives every ESL event of this channel (DTMF,
    PLAYBACK_START/STOP, CHANNEL_EXECUTE[_COMPLETE] with Application-UUID, CUSTOM
    mod_audio_fork::*, CHANNEL_HANGUP…), every media event posted with ``post_media`` and
    every ``TimerFired``. An exception in a hook ends the call (never the daemon).
    The route's greeting (if any) is played by the session before ``on_start`` with an
    Application-UUID starting ``greeting-``; with a Conversation plugged in, moving on from
    SPEAKING when it completes is the Conversation's decision (``call.transition``).
    """

    def on_start(self, call: CallSession) -> None:
        """The call is answered (greeting, if any, already sent)."""

    def on_event(self, event: object) -> None:
        """One event for this call."""

    def on_end(self, cause: str) -> None:
        """The call ended (any reason); release resources. Called once."""


ConversationFactory = Callable[["CallSession"], Conversation]


class Inbox:
    """Bounded two-lane mailbox: control before media; the terminal message is never lost.

    A message whose class sets ``must_deliver = True`` (a timer, a reply synthesized or
    played out: the dialog loop would wait for ever without it) is queued past a full
    control lane, in order, up to ``MUST_EXTRA`` more. Every dropped control message is
    counted and passed to ``on_drop`` (the session counts it in a metric)."""

    def __init__(self, control_max: int = CONTROL_INBOX, media_max: int = MEDIA_INBOX) -> None:
        self._control: deque[object] = deque()
        self._media: deque[object] = deque()
        self._terminal: object | None = None
        self.control_max = control_max
        self.media_max = media_max
        self.dropped_control = 0
        self.dropped_media = 0
        self.on_drop: Callable[[object], None] | None = None
        self._ready = gevent.event.Event()

    def put_control(self, item: object, terminal: bool = False) -> bool:
        """Queue a control message; False if it was dropped (lane full, not terminal, not
        ``must_deliver``)."""
        if len(self._control) >= self.control_max:
            if terminal and self._terminal is None:
                self._terminal = item
                self._ready.set()
                return True
            if not (getattr(item, "must_deliver", False)
                    and len(self._control) < self.control_max + MUST_EXTRA):
                self.dropped_control += 1
                if self.on_drop is not None:
                    self.on_drop(item)
                return False
        self._control.append(item)
        self._ready.set()
        return True

    def put_media(self, item: object) -> bool:
        """Queue a media message; when full the oldest is dropped (returns False then)."""
        dropped = len(self._media) >= self.media_max
        if dropped:
            self._media.popleft()
            self.dropped_media += 1
        self._media.append(item)
        self._ready.set()
        return not dropped

    def get(self, timeout: float | None) -> object | None:
        """Next message (control lane first), or None after ``timeout``."""
        if not (self._control or self._media or self._terminal is not None):
            self._ready.clear()
            self._ready.wait(timeout)
        if self._control:
            return self._control.popleft()
        if self._terminal is not None:
            item, self._terminal = self._terminal, None
            return item
        if self._media:
            return self._media.popleft()
        return None

    def __len__(self) -> int:
        return len(self._control) + len(self._media) + (self._terminal is not None)


# ---------------------------------------------------------------- the session -------------


def _cause_label(cause: str) -> str:
    return cause if cause.isupper() and cause.replace("_", "").isalnum() and len(cause) < 40 \
        else "OTHER"


IDLE_VAR = "send_silence_when_idle"
IDLE_SILENCE = "-1"      # FreeSWITCH: -1 = frames of zeros (no comfort noise)


def writes_when_idle(value: str | None) -> bool:
    """Whether a ``send_silence_when_idle`` value makes a parked channel write frames
    (FreeSWITCH takes ``atoi``: any non-zero level, or -1)."""
    m = re.match(r"\s*[-+]?\d+", value or "")
    return m is not None and int(m.group()) != 0


class CallSession:
    """Owns one call. Build it with the connection already ``connect``ed and subscribed;
    ``run()`` returns when the call is over and the socket is closed (``exit`` sent)."""

    def __init__(self, conn: OutboundConnection, channel: dict[str, str], route: RouteConfig,
                 route_label: str, metrics: Metrics, command_timeout_s: float = 5.0,
                 conversation_factory: ConversationFactory | None = None,
                 transfer_context: str = "default", bridge_profile: str = "external",
                 idle_frames: bool = False) -> None:
        self.conn = conn
        self.channel = channel
        self.uuid = channel.get("Unique-ID") or channel.get("variable_uuid", "")
        self.caller = channel.get("Caller-Caller-ID-Number", "")
        self.did = (channel.get("Caller-Destination-Number")
                    or channel.get("Channel-Destination-Number", ""))
        self.route = route
        self.route_label = route_label
        self.metrics = metrics
        self.timeout_s = command_timeout_s
        self.control = CallControl(conn, self.uuid, command_timeout_s,
                                   transfer_context, bridge_profile)
        self.machine = CallStateMachine()
        self.inbox = Inbox()
        self.inbox.on_drop = self._dropped
        self.log = get_logger(call_uuid=self.uuid)
        self.conversation: Conversation | None = None
        self._factory = conversation_factory
        self._timers: dict[str, gevent.Greenlet] = {}
        self.started = time.monotonic()
        self.answered_at: float | None = None
        self.cause: str | None = None
        self.outcome = "completed"
        self._hangup_sent_at: float | None = None
        self._greeting_uuid: str | None = None
        self._transfer_to: str | None = None
        #: Stored state to continue from (set before ``run()`` for a call resumed after a
        #: daemon restart; ``callctl.store.CallRecord``). The greeting is not played again.
        self.resume_from: Any = None
        #: The call needs the channel to write frames while nothing plays (module doc).
        self.idle_frames = idle_frames
        #: Whether it will (known once answered): the dialplan set a level, or we did in time.
        self.writes_idle_frames = writes_when_idle(channel.get(f"variable_{IDLE_VAR}"))
        self.ended = gevent.event.Event()
        conn.event_sink = self._on_esl_event

    # -- from other greenlets -------------------------------------------------------------

    @property
    def state(self) -> CallState:
        return self.machine.state

    def _on_esl_event(self, ev: EslEvent) -> None:
        """Runs in the connection's dispatch greenlet: filter, then queue. Never blocks."""
        h = ev.headers
        if h.get("Content-Type") == "text/disconnect-notice":
            self.inbox.put_control(ev, terminal=True)
            return
        owner = h.get("Unique-ID")
        if owner is not None and owner != self.uuid:
            self.metrics.protocol_errors.labels(source="esl_outbound", kind="unknown_call").inc()
            self.log.warning("call.foreign_event", esl_event=ev.name, other_uuid=owner)
            return
        terminal = h.get("Event-Name") in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE")
        if not self.inbox.put_control(ev, terminal=terminal):
            self.metrics.protocol_errors.labels(source="esl_outbound",
                                                kind="inbox_overflow").inc()

    def _dropped(self, item: object) -> None:
        """The control lane was full: ``item`` was dropped (any greenlet; never blocks)."""
        self.metrics.inbox_dropped.labels(kind=type(item).__name__).inc()
        if self.inbox.dropped_control == 1:
            self.log.warning("call.inbox_overflow", kind=type(item).__name__)

    def request_hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Ask the session to hang up. Safe from any greenlet; twice is harmless."""
        self.inbox.put_control(HangupRequested(cause), terminal=True)

    def request_release(self, cause: str) -> None:
        """Ask the session to let go of the call without hanging it up. Any greenlet."""
        self.inbox.put_control(ReleaseRequested(cause), terminal=True)

    def request_transfer(self, destination: str) -> None:
        """Ask the session to transfer the call. Safe from any greenlet."""
        self.inbox.put_control(TransferRequested(destination))

    def post_media(self, event: object) -> None:
        """A media event for this call (audio frame, VAD, transcript...)."""
        if not self.inbox.put_media(event):
            self.metrics.audio_frames_dropped.inc()

    def call_later(self, seconds: float, name: str) -> None:
        """Deliver ``TimerFired(name)`` after ``seconds`` (replaces a timer of that name)."""
        self.cancel_timer(name)
        self._timers[name] = gevent.spawn_later(
            seconds, self.inbox.put_control, TimerFired(name))

    def cancel_timer(self, name: str) -> None:
        g = self._timers.pop(name, None)
        if g is not None:
            g.kill(block=False)

    def transition(self, trigger: Trigger) -> CallState:
        """Move the state machine (for the Conversation); IllegalTransition ends the call."""
        before = self.machine.state
        after = self.machine.fire(trigger)
        if after is not before:
            self.log.debug("call.state", state=after.value, was=before.value)
        return after

    def info(self) -> dict[str, Any]:
        """A small JSON-able view for the NOC (/calls)."""
        return {"uuid": self.uuid, "state": self.state.value, "did": self.did,
                "route": self.route_label, "caller": self.caller,
                "age_s": round(time.monotonic() - self.started, 1)}

    # -- the session greenlet ---------------------------------------------------------------

    def run(self) -> None:
        """Own the call until it ends. Never raises."""
        self.log.info("call.start", caller=self.caller, did=self.did, route=self.route_label)
        try:
            self._answer()
            if self._factory is not None:
                self.conversation = self._factory(self)
            self._greet()
            if self.conversation is not None:
                self.conversation.on_start(self)
            while not self.machine.ended:
                item = self.inbox.get(IDLE_TICK_S)
                if item is not None:
                    self._handle(item)
                self._check_deadlines()
        except CallGone as e:
            self.cause = self.cause or "ORIGINATOR_CANCEL"
            self.log.info("call.gone", detail=str(e))
        except CallControlTimeout as e:
            self.outcome = "failed"
            self.cause = self.cause or "SWITCH_TIMEOUT"
            self.log.error("call.switch_timeout", error=str(e))
        except IllegalTransition as e:
            self.outcome = "failed"
            self.log.error("call.illegal_transition", error=str(e))
            self._hangup_quietly(e.hangup_cause)
        except CallControlError as e:
            self.outcome = "failed"
            self.log.error("call.control_failed", error=str(e))
            self._hangup_quietly("NORMAL_TEMPORARY_FAILURE")
        except Exception:
            self.outcome = "failed"
            self.log.exception("call.failed")
            self._hangup_quietly("NORMAL_TEMPORARY_FAILURE")
        finally:
            self._finish()

    def _answer(self) -> None:
        # A call coming back to the socket app (fallback chain after a daemon restart) is
        # answered already: ``answer`` would be a no-op without a CHANNEL_ANSWER to wait for.
        state = self.channel.get("Answer-State")
        if self.idle_frames and not self.writes_idle_frames:
            self._set_idle_frames(in_time=state not in ("answered", "early"))
        if state != "answered":
            self.control.answer()
        self.answered_at = time.monotonic()
        self.transition(Trigger.ANSWER)
        self.log.info("call.answer", setup_ms=round((self.answered_at - self.started) * 1000))

    def _set_idle_frames(self, in_time: bool) -> None:
        """``send_silence_when_idle=-1`` on the channel (kept for a later re-offer even when
        it is too late for this park: the media came up already)."""
        try:
            self.control.setvar(IDLE_VAR, IDLE_SILENCE)
        except CallCommandRefused as e:
            self.log.warning("call.idle_frames_refused", error=str(e))
            return
        self.writes_idle_frames = in_time
        if not in_time:
            self.log.warning("call.no_idle_frames", answer_state=self.channel.get(
                "Answer-State"), why="media up before the socket app: set "
                f"{IDLE_VAR} in the dialplan for stream playback")

    def _greet(self) -> None:
        if not self.route.greeting or self.resume_from is not None:
            if self.conversation is None:
                self.transition(Trigger.LISTEN)
            return
        self._greeting_uuid = f"greeting-{uuidlib.uuid4()}"
        self.control.play(self.route.greeting, self._greeting_uuid)
        self.transition(Trigger.SPEAK)

    def _handle(self, item: object) -> None:
        if isinstance(item, EslEvent):
            self._handle_esl(item)
        elif isinstance(item, HangupRequested):
            self._hangup(item.cause)
        elif isinstance(item, TransferRequested):
            self._transfer(item.destination)
        elif isinstance(item, ReleaseRequested):
            if not self.machine.ended:
                self.cause, self.outcome = item.cause, "released"
                self.log.warning("call.released", cause=item.cause)
                self.machine.fire(Trigger.HANGUP)
        elif self.conversation is not None:      # timers and media events
            self.conversation.on_event(item)

    def _handle_esl(self, ev: EslEvent) -> None:
        h = ev.headers
        if h.get("Content-Type") == "text/disconnect-notice":
            # linger notice: the channel is down; anything else: the socket is gone
            if h.get("Content-Disposition") == "connection-lost" \
                    and ev.body != "closed by peer" and self.outcome == "completed":
                # we dropped the socket: the switch's bytes broke ESL (or a socket error).
                # The call failed, whatever cause the switch then hangs it up with.
                self.outcome = "failed"
                self.log.warning("call.connection_lost", reason=(ev.body or "")[:200])
            self.cause = self.cause or h.get("Hangup-Cause") or "NORMAL_CLEARING"
            self.machine.fire(Trigger.HANGUP)
            return
        name = h.get("Event-Name")
        if name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            self.cause = self.cause or h.get("Hangup-Cause", "NORMAL_CLEARING")
        if self.conversation is not None:
            self.conversation.on_event(ev)
        if name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            self.machine.fire(Trigger.HANGUP)
        elif name == "DTMF":
            self.log.debug("call.dtmf", digit=h.get("DTMF-Digit"))
        elif (name == "CHANNEL_EXECUTE_COMPLETE" and self._greeting_uuid is not None
              and h.get("Application-UUID") == self._greeting_uuid):
            self._greeting_uuid = None
            if self.conversation is None and self.machine.can(Trigger.LISTEN) \
                    and self.state is CallState.SPEAKING:
                self.transition(Trigger.LISTEN)
        elif (name == "CHANNEL_EXECUTE" and self._transfer_to is not None
              and h.get("Application") == "bridge"):
            self._release_after_transfer()

    def _hangup(self, cause: str) -> None:
        if self._hangup_sent_at is not None or self.machine.ended:
            return                                   # two hangups for one call: harmless
        self._hangup_sent_at = time.monotonic()
        self.cause = self.cause or cause
        self.outcome = "hungup_by_us" if self.outcome == "completed" else self.outcome
        try:
            if self.state is CallState.SPEAKING:
                # A queued sendmsg hangup waits behind an event-locked playback (FreeSWITCH
                # dequeues it only when the file ends): stop the playback first.
                try:
                    self.control.stop_playback()
                except CallCommandRefused:
                    pass
            self.control.hangup(cause)
        except CallGone:
            self.machine.fire(Trigger.HANGUP)

    def _transfer(self, dest: str) -> None:
        if self.machine.ended or self._transfer_to is not None:
            return
        self.transition(Trigger.TRANSFER)
        self._transfer_to = dest
        try:
            self.control.transfer(dest)
        except CallCommandRefused as e:
            self.log.warning("call.transfer_refused", destination=dest, error=str(e))
            self._transfer_to = None
            self.transition(Trigger.TRANSFER_FAILED)
            return
        self.outcome = "transferred"
        self.log.info("call.transfer", destination=dest)
        if not (dest.startswith("sip:") or "@" in dest):
            self._release_after_transfer()     # uuid_transfer: the call left our dialplan
        else:
            self._hangup_sent_at = time.monotonic()   # bridge: release when it runs (bounded)

    def _release_after_transfer(self) -> None:
        self.cause = self.cause or "TRANSFERRED"
        self.machine.fire(Trigger.HANGUP)

    def _check_deadlines(self) -> None:
        if self.conn.closed and not self.machine.ended:
            # the socket is gone and its disconnect notice was lost (full event queue):
            # never keep a dead call's slot
            self.cause = self.cause or "NORMAL_CLEARING"
            self.log.warning("call.socket_closed_without_notice")
            self.machine.fire(Trigger.HANGUP)
            return
        if self._hangup_sent_at is not None and not self.machine.ended \
                and time.monotonic() - self._hangup_sent_at > self.timeout_s:
            self.log.warning("call.hangup_unconfirmed", waited_s=self.timeout_s)
            if self._transfer_to is not None:
                self._release_after_transfer()
            else:
                self.machine.fire(Trigger.HANGUP)

    def _hangup_quietly(self, cause: str) -> None:
        self.cause = self.cause or cause
        if self.conn.connected and not self.conn._lingering:
            try:
                self.control.hangup(cause)
            except CallControlError:
                pass

    def _finish(self) -> None:
        """Runs once: state ENDED, conversation told, timers killed, ``exit`` sent."""
        if not self.machine.ended:
            self.machine.fire(Trigger.HANGUP)
        cause = self.cause or "NORMAL_CLEARING"
        for name in list(self._timers):
            self.cancel_timer(name)
        if self.conversation is not None:
            try:
                self.conversation.on_end(cause)
            except Exception:
                self.log.exception("call.conversation_end_failed")
        self.conn.event_sink = None
        self.conn.stop(exit_timeout=min(1.0, self.timeout_s))
        now = time.monotonic()
        talk = now - self.answered_at if self.answered_at is not None else 0.0
        self.metrics.calls.labels(route=self.route_label, outcome=self.outcome,
                                  cause=_cause_label(cause)).inc()
        self.log.info("call.end", cause=cause, outcome=self.outcome,
                      duration_s=round(now - self.started, 3), talk_s=round(talk, 3),
                      transfer_to=self._transfer_to, dropped_events=self.inbox.dropped_control)
        self.ended.set()
