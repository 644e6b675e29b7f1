"""One ESL connection of the emulated switch (shared by inbound and outbound sockets).

How this works: a reader loop (the connection's own greenlet) feeds ``eslcodec.CommandParser``
and handles each command, writing its reply at once. Events reach ``deliver`` from whatever
greenlet fired them; if the subscription, the ``myevents`` uuid and the filters let them
through they are serialized right away (a snapshot of the channel at that instant) and put
in a bounded queue. A writer greenlet writes each one ``event_delay_s`` after it was fired,
and only while no command is being handled — FreeSWITCH flushes events when the listener is
idle, so the ``api/response`` of ``uuid_answer`` precedes the CHANNEL_ANSWER it causes.

Bad input never ends more than this connection: a frame the parser rejects is logged with its
rule and bytes, answered with the disconnect notice, and the socket is closed.

Events go out as text/event-plain, -json or -xml (the connection's last ``event <fmt>``).
Log lines: whatever in the emulator logs calls ``emit_log(sw, …)``; every connection that sent
``log <level>`` (and may log, see ``userauth``) and whose level admits the line queues a
``log/data`` frame behind the events already queued; ``nolog`` drops the lines not yet
written (FreeSWITCH flushes the log queue). Connections authenticated with ``userauth`` carry
the user's ``esl-allowed-events`` / ``esl-allowed-api`` / ``esl-allowed-log`` restrictions
(``Permissions``).

Known gaps: the inbound ACL (``text/rude-rejection``) is not emulated; FreeSWITCH's ~0.5 s
pause between ``+OK bye`` and the disconnect notice is not reproduced; the emulator's channels
do not log yet (``emit_log`` is there for them).
"""

from __future__ import annotations

import re
import socket
import time
import uuid as uuidlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.lock
import gevent.queue

from callctl.log import get_logger
from callctl.sim import api, eslcodec
from callctl.sim.channel import PrivateMessage
from callctl.sim.eslcodec import Command, ESLCommandError
from callctl.sim.events import Event

if TYPE_CHECKING:
    from callctl.sim.switch import Switch

MAX_QUEUE = 100_000          # mod_event_socket MAX_QUEUE_LEN
MAX_MISSED = 500             # … MAX_MISSED
WRITE_TIMEOUT_S = 10.0
LOST_EVENTS = "killed listener because of lost events\n"

EVENT_NAMES = frozenset([
    "CUSTOM", "CLONE", "CHANNEL_CREATE", "CHANNEL_DESTROY", "CHANNEL_STATE",
    "CHANNEL_CALLSTATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HOLD", "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE", "CHANNEL_UUID", "API", "LOG", "INBOUND_CHAN", "OUTBOUND_CHAN",
    "STARTUP", "SHUTDOWN", "PUBLISH", "UNPUBLISH", "TALK", "NOTALK", "SESSION_CRASH",
    "MODULE_LOAD", "MODULE_UNLOAD", "DTMF", "MESSAGE", "PRESENCE_IN", "NOTIFY_IN",
    "PRESENCE_OUT", "PRESENCE_PROBE", "MESSAGE_WAITING", "MESSAGE_QUERY", "ROSTER", "CODEC",
    "BACKGROUND_JOB", "DETECTED_SPEECH", "DETECTED_TONE", "PRIVATE_COMMAND", "HEARTBEAT",
    "TRAP", "ADD_SCHEDULE", "DEL_SCHEDULE", "EXE_SCHEDULE", "RE_SCHEDULE", "RELOADXML",
    "NOTIFY", "PHONE_FEATURE", "PHONE_FEATURE_SUBSCRIBE", "SEND_MESSAGE", "RECV_MESSAGE",
    "REQUEST_PARAMS", "CHANNEL_DATA", "GENERAL", "COMMAND", "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED", "SERVER_DISCONNECTED", "SEND_INFO", "RECV_INFO",
    "RECV_RTCP_MESSAGE", "SEND_RTCP_MESSAGE", "CALL_SECURE", "NAT", "RECORD_START",
    "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP", "CALL_UPDATE", "FAILURE", "SOCKET_DATA",
    "MEDIA_BUG_START", "MEDIA_BUG_STOP", "CONFERENCE_DATA_QUERY", "CONFERENCE_DATA",
    "CALL_SETUP_REQ", "CALL_SETUP_RESULT", "CALL_DETAIL", "DEVICE_STATE", "TEXT",
    "SHUTDOWN_REQUESTED", "ALL",
])

MYEVENTS = frozenset([
    "CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE", "CHANNEL_CREATE",
    "CHANNEL_DATA", "CHANNEL_DESTROY", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ORIGINATE", "CHANNEL_UUID",
    "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_STATE", "CHANNEL_UNBRIDGE", "CHANNEL_UNPARK", "DETECTED_SPEECH", "DTMF", "NOTALK",
    "TALK",
])

LOG_LEVELS = {"console": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
              "info": 6, "debug": 7}

TEXT_CHANNEL_LOG = 0          # SWITCH_CHANNEL_ID_LOG
TEXT_CHANNEL_SESSION = 3      # SWITCH_CHANNEL_ID_SESSION (User-Data = the session uuid)

# switch -> the connections that asked for log lines (``log <level>``)
_loggers: weakref.WeakKeyDictionary[Any, weakref.WeakSet[EslConnection]] = \
    weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Permissions:
    """What a ``userauth`` user may do (directory params ``esl-allowed-events``,
    ``esl-allowed-api``, ``esl-allowed-log``). ``None`` = unrestricted; event names are upper
    case, CUSTOM subclasses as given; ``"ALL"`` among the events allows every event."""

    events: frozenset[str] | None = None
    api: frozenset[str] | None = None
    log: bool = True

    def event_allowed(self, name: str) -> bool:
        return self.events is None or "ALL" in self.events or name in self.events

    def api_allowed(self, command: str) -> bool:
        return self.api is None or "all" in self.api or command in self.api


def emit_log(sw: Switch, level: int, text: str, *, file: str, func: str, line: int,
             session_uuid: str | None = None) -> None:
    """The switch logs one line (``switch_log_printf``): every connection of ``sw`` that is
    logging at ``level`` or more verbose queues it as a ``log/data`` frame. ``text`` ends with
    its own newline, as FreeSWITCH's format strings do; ``session_uuid`` makes it a session
    log line (``Text-Channel: 3``, ``User-Data: <uuid>``)."""
    data = eslcodec.log_line(level, file, line, text)
    channel = TEXT_CHANNEL_SESSION if session_uuid else TEXT_CHANNEL_LOG
    frame = eslcodec.log_data(level, channel, file, func, line, session_uuid, data)
    for conn in list(_loggers.get(sw, ())):
        conn.deliver_log(level, frame)


class EslConnection:
    """Base class: subscriptions, filters, event queue, common commands.

    Subclasses implement ``handle_first`` (auth / connect phase) and may override
    ``handle`` for session-bound commands. ``session_uuid`` is set for session-bound sockets.
    """

    kind = "esl"

    def __init__(self, sw: Switch, sock: socket.socket, peer: Any) -> None:
        self.sw = sw
        self.sock = sock
        self.peer = peer
        self.parser = eslcodec.CommandParser()
        self.log = get_logger(esl=self.kind, peer=str(peer))
        self.session_uuid: str | None = None
        self.fmt = "plain"
        self.events: set[str] = set()
        self.all_events = False
        self.custom: set[str] = set()
        self.myevents_uuid: str | None = None
        self.filters: list[tuple[str, str]] = []
        self.logging: str | None = None
        self.log_level = 0
        self._log_generation = 0                # bumped by nolog: queued lines are dropped
        self.perms = Permissions()
        self.lingering = False
        self.linger_s: int | None = None
        self.released = gevent.event.Event()    # set once closed (session lock released)
        self.closed = False
        self.missed = 0
        self._queue: gevent.queue.Queue[tuple[float, bytes | Callable[[], None]]] = \
            gevent.queue.Queue(MAX_QUEUE)
        self._idle = gevent.event.Event()
        self._idle.set()
        self._wlock = gevent.lock.Semaphore()
        self._writer = gevent.spawn(self._write_loop)

    # ------------------------------------------------------------------ output

    def send(self, data: bytes) -> bool:
        """Write bytes now (replies). False (and the connection closes) on a socket error."""
        if self.closed:
            return False
        try:
            with self._wlock, gevent.Timeout(WRITE_TIMEOUT_S):
                self.sock.sendall(data)
            return True
        except (OSError, gevent.Timeout) as exc:
            self.log.info("sim.esl_write_failed", error=repr(exc))
            self.close()
            return False

    def reply(self, text: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send(eslcodec.command_reply(text, extra))

    def disconnect(self, text: str = eslcodec.GOODBYE) -> None:
        """Send the disconnect notice and close (FreeSWITCH closes right after it)."""
        self.send(eslcodec.disconnect_notice(self.session_uuid, text))
        self.close()

    def enqueue_later(self, item: bytes | Callable[[], None]) -> None:
        """Put a frame (or an action) behind the events already queued."""
        try:
            self._queue.put_nowait((time.monotonic() + self.sw.cfg.event_delay_s, item))
            self.missed = 0
        except gevent.queue.Full:
            self.missed += 1
            if self.missed > MAX_MISSED:
                self.log.warning("sim.esl_lost_events")
                gevent.spawn(self.disconnect, LOST_EVENTS)

    def deliver(self, ev: Event) -> None:
        """Called for every fired event; queues it if this connection wants it. A
        session-bound socket never gets its own channel's CHANNEL_DESTROY (it holds the
        session until it closes)."""
        if self.closed or not self.wants(ev):
            return
        if ev.name == "CHANNEL_DESTROY" and self.session_uuid is not None \
                and ev.unique_id == self.session_uuid:
            return
        if self.fmt == "json":
            data = eslcodec.event_json(ev.headers, ev.body)
        elif self.fmt == "xml":
            data = eslcodec.event_xml(ev.headers, ev.body)
        else:
            data = eslcodec.event_plain(ev.headers, ev.body)
        self.enqueue_later(data)

    def deliver_log(self, level: int, frame: bytes) -> None:
        """Queue one ``log/data`` frame if this connection logs at ``level`` or above; it is
        dropped if ``nolog`` comes before it is written."""
        if self.closed or self.logging is None or level > self.log_level:
            return
        generation = self._log_generation

        def write() -> None:
            if self.logging is not None and generation == self._log_generation:
                self.send(frame)

        self.enqueue_later(write)

    def _write_loop(self) -> None:
        while not self.closed:
            due, item = self._queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                gevent.sleep(wait)
            self._idle.wait()
            if self.closed:
                return
            if callable(item):
                item()
            else:
                self.send(item)

    # ------------------------------------------------------------------ subscription

    def subscribed(self, ev: Event) -> bool:
        if ev.name == "CUSTOM":
            return self.all_events or (ev.subclass or "") in self.custom
        return self.all_events or ev.name in self.events

    def wants(self, ev: Event) -> bool:
        if self.myevents_uuid is not None and ev.unique_id != self.myevents_uuid and not (
                ev.name == "BACKGROUND_JOB" and ev.get("Job-Owner-UUID") == self.myevents_uuid):
            return False
        if not self.subscribed(ev):
            return False
        return self._filters_pass(ev) if self.filters else True

    def _filters_pass(self, ev: Event) -> bool:
        lookup = {k.lower(): v for k, v in reversed(ev.headers)}
        positive = False
        for name, value in self.filters:
            have = lookup.get(name.lower())
            if have is None:
                continue
            neg = value.startswith("-")
            want = value[1:] if value[:1] in "+-" else value
            if want.startswith("/"):
                try:
                    match = re.search(want.strip("/"), have) is not None
                except re.error:
                    match = False
            else:
                match = have.lower() == want.lower()
            if match and neg:
                return False
            if match and not neg:
                positive = True
        return positive

    # ------------------------------------------------------------------ reader

    def serve(self) -> None:
        """The reader loop; returns when the connection ends (socket closed either way)."""
        try:
            self.on_open()
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    if self.parser.buffered:
                        self.log.info("sim.esl_eof_mid_command", buffered=self.parser.buffered)
                    break
                self.parser.receive_data(data)
                while not self.closed:
                    cmd = self.parser.next_command()
                    if cmd is None:
                        break
                    self._idle.clear()
                    try:
                        self.handle(cmd)
                    finally:
                        self._idle.set()
        except ESLCommandError as exc:
            self.log.warning("sim.esl_bad_frame", rule=exc.rule, data=repr(exc.data))
            self.disconnect()
        except (OSError, gevent.Timeout) as exc:
            if not self.closed:                 # not our own close() from another greenlet
                self.log.info("sim.esl_socket_error", error=repr(exc))
        finally:
            self.close()

    def on_open(self) -> None:
        """Hook: first bytes of the connection (auth/request for inbound)."""

    # ------------------------------------------------------------------ session-bound

    def channel_done(self) -> None:
        """The bound channel fired CHANNEL_HANGUP_COMPLETE: after the events queued so far,
        send the linger notice (lingering) or the disconnect notice and close."""
        if self.closed:
            self.released.set()
            return
        self.enqueue_later(self._after_hangup)

    def _after_hangup(self) -> None:
        if not self.lingering:
            self.disconnect()
            return
        ch = self.sw.channel(self.session_uuid or "")
        name = ch.name if ch is not None else ""
        self.send(eslcodec.linger_notice(self.session_uuid or "", name, self.linger_s))
        if self.linger_s is not None:
            gevent.spawn_later(self.linger_s, self.disconnect)

    def _session_command(self, low: str, rest: str) -> None:
        """linger / nolinger / getvar / divert_events of a session-bound socket."""
        ch = self.sw.channel(self.session_uuid or "")
        if low == "linger":
            self.lingering = True
            secs = rest.strip()
            self.linger_s = int(secs) if secs.isdigit() else None
            self.reply(f"+OK will linger {secs} seconds" if secs.isdigit() else "+OK will linger")
        elif low == "nolinger":
            self.lingering = False
            self.reply("+OK will not linger")
        elif low == "getvar":
            value = ch.variables.get(rest.strip()) if ch is not None else None
            self.reply(value or "-ERR command not found")
        elif low == "divert_events":
            arg = rest.strip().lower()
            self.reply("+OK events diverted" if arg == "on" else
                       "+OK events not diverted" if arg == "off" else "-ERR missing value.")
        else:                                   # resume
            self.reply("+OK")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.released.set()
        self.sw.remove_listener(self)
        _loggers.get(self.sw, weakref.WeakSet()).discard(self)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._idle.set()
        if gevent.getcurrent() is not self._writer:
            self._writer.kill(block=False)

    # ------------------------------------------------------------------ commands

    def handle(self, cmd: Command) -> None:
        """Commands every authenticated connection understands."""
        line = cmd.line.strip()
        word, _, rest = line.partition(" ")
        low = word.lower()
        if low in ("exit", "..."):
            self.reply("+OK bye")
            self.disconnect()
        elif low.startswith("event"):
            self._cmd_event(rest)
        elif low == "nixevent":
            self._cmd_nixevent(rest)
        elif low == "noevents":
            had = self.all_events or self.events or self.custom
            self.all_events, self.events, self.custom = False, set(), set()
            self.reply("+OK no longer listening for events" if had
                       else "-ERR not listening for events")
        elif low == "filter":
            self._cmd_filter(rest)
        elif low == "api":
            self._cmd_api(rest)
        elif low == "bgapi":
            self._cmd_bgapi(rest, cmd)
        elif low == "sendmsg":
            self._cmd_sendmsg(rest.strip() or self.session_uuid or "", cmd)
        elif low == "log":
            self._cmd_log(rest.strip())
        elif low == "nolog":
            was_logging, self.logging = self.logging, None
            self._log_generation += 1
            _loggers.get(self.sw, weakref.WeakSet()).discard(self)
            self.reply("+OK no longer logging" if was_logging else "-ERR not loging")
        elif low == "sendevent":
            self.reply(f"+OK {uuidlib.uuid4()}")
        elif low in ("linger", "nolinger", "divert_events", "getvar", "resume"):
            if self.session_uuid is not None:
                self._session_command(low, rest)
            else:
                self.reply("-ERR not controlling a session" if low != "divert_events"
                           else "-ERR not controlling a session.")
        else:
            self.reply("-ERR command not found")

    def _names(self, tokens: list[str], allowed_only: bool = False
               ) -> tuple[set[str], set[str], bool]:
        """Event names and CUSTOM subclasses among ``tokens``; with ``allowed_only`` the ones
        a ``userauth`` user may not have are skipped silently (as FreeSWITCH does)."""
        names: set[str] = set()
        subs: set[str] = set()
        custom = False
        ok = self.perms.event_allowed if allowed_only else (lambda _name: True)
        for tok in tokens:
            if custom:
                if ok(tok):
                    subs.add(tok)
                continue
            up = tok.upper().removeprefix("SWITCH_EVENT_")
            if up == "CUSTOM":
                custom = True
            if up in EVENT_NAMES and ok(up):
                names.add(up)
        return names, subs, bool(names or subs)

    def _cmd_event(self, rest: str) -> None:
        tokens = rest.split()
        fmt = self.fmt
        if tokens and tokens[0].lower() in ("plain", "json", "xml"):
            fmt = tokens.pop(0).lower()
        names, subs, ok = self._names(tokens, allowed_only=True)
        if not ok:
            self.reply("-ERR no keywords supplied")
            return
        self.fmt = fmt
        if "ALL" in names:
            self.all_events = True
        self.events |= names - {"ALL", "CUSTOM"}
        self.custom |= subs
        self.reply(f"+OK event listener enabled {fmt}")

    def _cmd_nixevent(self, rest: str) -> None:
        names, subs, ok = self._names(rest.split())
        if not ok:
            self.reply("-ERR no keywords supplied")
            return
        if "ALL" in names:
            self.all_events, self.events, self.custom = False, set(), set()
        else:
            if self.all_events:
                self.all_events = False
                self.events = set(EVENT_NAMES) - {"ALL", "CUSTOM"}
            self.events -= names
            self.custom -= subs
        self.reply("+OK events nixed")

    def _cmd_filter(self, rest: str) -> None:
        parts = rest.strip().split(" ", 2)
        if parts and parts[0].lower() == "delete":
            name = parts[1] if len(parts) > 1 else ""
            value = parts[2] if len(parts) > 2 else ""
            if name.lower() == "all" or not name:
                self.filters.clear()
                name = "all"
            else:
                self.filters = [(h, v) for h, v in self.filters
                                if not (h.lower() == name.lower() and (not value or v == value))]
            self.reply(f"+OK filter deleted. [{name}][{value}]")
            return
        if parts and parts[0].lower() == "add":
            parts = parts[1:] if len(parts) < 3 else [parts[1], *parts[2].split(" ", 1)]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            self.reply("-ERR invalid syntax")
            return
        name, value = parts[0], " ".join(parts[1:])
        self.filters.append((name, value))
        self.reply(f"+OK filter added. [{name}]=[{value}]")

    def _cmd_api(self, rest: str) -> None:
        command, _, arg = rest.strip().partition(" ")
        if not self.perms.api_allowed(command):
            self.reply("-ERR permission denied")
            return
        body = api.execute(self.sw, command, arg.strip())
        self.send(eslcodec.api_response(body))

    def _cmd_bgapi(self, rest: str, cmd: Command) -> None:
        job = (cmd.header("Job-UUID") or "").strip() or str(uuidlib.uuid4())
        command, _, arg = rest.strip().partition(" ")
        arg = arg.strip()
        if not self.perms.api_allowed(command):
            self.reply("-ERR permission denied")
            return
        self.reply(f"+OK Job-UUID: {job}", (("Job-UUID", job),))
        owner = self.session_uuid
        gevent.spawn(_background_job, self.sw, job, owner, command, arg)

    def _cmd_sendmsg(self, target: str, cmd: Command) -> None:
        ch = self.sw.channel(target) if target else None
        if ch is None:
            self.reply(f"-ERR invalid session id [{target}]")
            return
        call_command = (cmd.header("call-command") or "").strip().lower()
        arg = cmd.header("execute-app-arg") or ""
        if cmd.body and (cmd.header("content-type") or "").lower().startswith("text/plain"):
            arg = cmd.body.decode("utf-8", "replace")
        try:
            loops = int(cmd.header("loops") or "1")
        except ValueError:
            loops = 1
        prefix = (("Command", cmd.raw), *cmd.headers)
        if call_command == "execute":
            msg = PrivateMessage("execute", (cmd.header("execute-app-name") or "").strip(), arg,
                                 event_uuid=cmd.header("event-uuid"),
                                 event_lock=(cmd.header("event-lock") or "") == "true",
                                 loops=loops, prefix=prefix)
        elif call_command == "hangup":
            msg = PrivateMessage("hangup", cause=(cmd.header("hangup-cause") or
                                                  "NORMAL_CLEARING").strip(), prefix=prefix)
        else:
            msg = PrivateMessage(call_command or "unknown", prefix=prefix)
        ch.enqueue(msg)
        self.reply("+OK")

    def _cmd_log(self, level: str) -> None:
        if not self.perms.log:
            self.reply("-ERR permission denied")
            return
        lvl = level or "debug"
        num = int(lvl) if lvl.isdigit() and int(lvl) <= 7 else LOG_LEVELS.get(lvl.lower())
        if num is None:
            self.reply("-ERR invalid log level")
            return
        self.logging, self.log_level = lvl, num
        _loggers.setdefault(self.sw, weakref.WeakSet()).add(self)
        self.reply(f"+OK log level {lvl} [{num}]")


def _background_job(sw: Switch, job: str, owner: str | None, command: str, arg: str) -> None:
    body = api.execute(sw, command, arg)
    extra = [("Job-UUID", job)]
    if owner:
        extra.append(("Job-Owner-UUID", owner))
    extra.append(("Job-Command", command))
    if arg:
        extra.append(("Job-Command-Arg", arg))
    sw.dispatch(sw.factory.plain_event("BACKGROUND_JOB", extra, body or "-ERR no reply\n"))
