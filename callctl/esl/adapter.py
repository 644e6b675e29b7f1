"""greenswitch 0.0.19 with its known gaps fixed (PROTOCOL.md §6.3). The ONE module that knows.

How this works:

* ``FrameReader`` is an I/O-free ESL frame parser: ``receive_data(bytes)`` then
  ``next_frame()`` until None. Bytes stay bytes until one header value is decoded;
  ``Content-Length`` counts bytes; every buffer is bounded. Garbage raises
  ``EslProtocolError`` (our remote-error class) and nothing else.
* ``parse_event_plain`` splits a ``text/event-plain`` body at the first blank line *before*
  URL-decoding, so CUSTOM JSON bodies survive (gap 1); the body lands in ``EslEvent.body``.
* ``_Fixed`` replaces greenswitch's two per-connection greenlets: the receive loop uses the
  FrameReader (a bad frame or bad UTF-8 ends only that connection; a dropped connection fails
  every pending command instead of hanging it, gaps 5/6/9); the process loop runs greenswitch's
  own handlers (so its blocking waits keep working, gap 3) and then hands *every* event to
  ``event_sink`` and to ``expect()`` waiters — we never register handlers of our own.
  ``send()`` has a timeout on every command (``EslTimeout``); because replies are matched FIFO,
  a timed-out connection is closed. ``event json|xml`` is refused (gap 2).
* ``OutboundListener`` accepts FreeSWITCH's outbound connections with a gevent
  ``StreamServer`` (no 100 ms accept polling) and hands each socket to a handler running in
  that connection's own greenlet.
"""

from __future__ import annotations

import socket as _pysocket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import gevent
import gevent.event
import gevent.pool
import gevent.queue
from gevent.server import StreamServer
from greenswitch.esl import ESLEvent, InboundESL, NotConnectedError, OutboundSession
from greenswitch.esl import OutboundSessionHasGoneAway as _GoneAway

from callctl.log import get_logger
from callctl.metrics import Metrics

MAX_HEADER_BYTES = 1 << 20        # one header block
MAX_BODY_BYTES = 16 << 20         # FreeSWITCH's own MAX_CONTENT_LENGTH
EVENT_QUEUE_SIZE = 10000          # events parsed but not yet dispatched (backpressure beyond)
_SHOW = 80                        # bytes of offending input kept in an error

#: api names used as metric labels; anything else is counted as "api_other" (closed label set).
KNOWN_APIS = frozenset({
    "uuid_break", "uuid_kill", "uuid_transfer", "uuid_bridge", "uuid_record", "uuid_setvar",
    "uuid_getvar", "uuid_send_dtmf", "uuid_audio_fork", "uuid_answer", "uuid_exists",
    "show", "status", "hupall", "originate", "version",
})


# ------------------------------------------------------------------------------------------
# Errors: the peer's faults (EslPeerError) vs. our misuse (EslUsageError).
# ------------------------------------------------------------------------------------------


class EslError(Exception):
    """Base of every ESL error. ``retry`` says whether the same command may be tried again."""

    retry = False


class EslPeerError(EslError):
    """The switch (or the network) misbehaved. The connection it came from is closed."""


class EslProtocolError(EslPeerError):
    """The peer sent bytes that break ESL framing. Shows the rule and the offending bytes."""

    def __init__(self, rule: str, data: bytes = b"") -> None:
        shown = data[:_SHOW] + (b"..." if len(data) > _SHOW else b"")
        super().__init__(f"ESL protocol error: {rule}" + (f": {shown!r}" if data else ""))
        self.rule = rule
        self.data = data[:_SHOW]


class EslTimeout(EslPeerError):
    """The switch did not answer a command in time; the connection was closed."""


class EslDisconnected(EslPeerError):
    """The connection is gone (closed by the peer, a disconnect notice, or a previous fault)."""

    retry = True


class EslAuthError(EslPeerError):
    """The switch refused the password (inbound mode). Fix ``esl.password``."""


class EslCommandFailed(EslError):
    """The switch answered ``-ERR …`` / ``-USAGE …``. ``reply`` holds its text."""

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"{command.split()[0] if command else '?'}: {reply.strip()[:200]}")
        self.reply = reply


class EslUsageError(EslError):
    """Our misuse: a command this adapter refuses to send (it would break the connection)."""


# ------------------------------------------------------------------------------------------
# I/O-free parsing.
# ------------------------------------------------------------------------------------------


class Frame:
    """One ESL frame: its (URL-decoded) header block and its raw body bytes."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Frame({self.headers.get('Content-Type')!r}, {len(self.body)} body bytes)"


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EslProtocolError(f"{what} is not UTF-8", data) from None


def parse_headers(block: bytes) -> dict[str, str]:
    """``Name: value`` lines (LF-separated, values URL-decoded) → dict. First value wins for a
    repeated name (FreeSWITCH repeats ``Hangup-Cause`` with the same value)."""
    headers: dict[str, str] = {}
    for raw in block.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or b" " in name:
            raise EslProtocolError("header line is not 'Name: value'", line)
        text = _decode(value[1:] if value.startswith(b" ") else value, "header value")
        try:
            decoded = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise EslProtocolError("URL-encoded header value is not UTF-8", line) from None
        headers.setdefault(_decode(name, "header name"), decoded)
    return headers


def _content_length(headers: dict[str, str]) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    if not raw.isdigit() or int(raw) > MAX_BODY_BYTES:
        raise EslProtocolError("bad Content-Length", raw.encode())
    return int(raw)


class FrameReader:
    """Bytes in, ``Frame``s out. No I/O. Raises only ``EslProtocolError``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending: dict[str, str] | None = None   # headers whose body is still missing
        self._need = 0

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        if self._pending is None:
            while self._buf[:1] == b"\n":           # stray blank lines between frames
                del self._buf[:1]
            end = self._buf.find(b"\n\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    raise EslProtocolError("header block too long", bytes(self._buf[:_SHOW]))
                return None
            if end > MAX_HEADER_BYTES:
                raise EslProtocolError("header block too long", bytes(self._buf[:_SHOW]))
            headers = parse_headers(bytes(self._buf[:end]))
            del self._buf[:end + 2]
            if "Content-Type" not in headers:
                raise EslProtocolError("frame without Content-Type", repr(headers).encode())
            self._pending, self._need = headers, _content_length(headers)
        if len(self._buf) < self._need:
            return None
        body = bytes(self._buf[:self._need])
        del self._buf[:self._need]
        headers, self._pending = self._pending, None
        return Frame(headers, body)


class EslEvent(ESLEvent):
    """greenswitch's event with the body kept apart. ``headers`` are URL-decoded; ``body`` is
    the raw text after the event's own blank line (a CUSTOM event's JSON, an api output)."""

    def __init__(self, headers: dict[str, str], body: str = "") -> None:
        self.headers = headers
        self.body = body
        self.data: Any = None

    @property
    def name(self) -> str:
        """``Event-Name``, or the ``Event-Subclass`` of a CUSTOM event."""
        n = self.headers.get("Event-Name", "")
        return self.headers.get("Event-Subclass", n) if n == "CUSTOM" else n

    @property
    def uuid(self) -> str | None:
        return self.headers.get("Unique-ID")

    def __repr__(self) -> str:
        return f"EslEvent({self.name or self.headers.get('Content-Type')!r})"


def parse_event_plain(raw: bytes) -> EslEvent:
    """Parse a ``text/event-plain`` frame body: headers, then an optional ``Content-Length``
    body, split at the first blank line *before* URL-decoding. Raises ``EslProtocolError``."""
    head, _sep, rest = raw.partition(b"\n\n")
    headers = parse_headers(head)
    if "Event-Name" not in headers:
        raise EslProtocolError("event without Event-Name", head)
    n = _content_length(headers)
    if n > len(rest):
        raise EslProtocolError("event body shorter than its Content-Length", rest)
    return EslEvent(headers, _decode(rest[:n], "event body") if n else "")


def frame_to_event(frame: Frame) -> EslEvent:
    """Turn one frame into the event greenswitch's machinery expects."""
    ctype = frame.headers["Content-Type"]
    if ctype == "text/event-plain":
        ev = parse_event_plain(frame.body)
        ev.headers["Content-Type"] = ctype
        return ev
    if ctype in ("text/event-json", "text/event-xml"):
        raise EslProtocolError(f"{ctype} received; this adapter speaks plain events only")
    ev = EslEvent(dict(frame.headers), _decode(frame.body, "frame body"))
    if ctype == "command/reply":
        ev.data = frame.headers.get("Reply-Text", "")
    else:
        ev.data = ev.body
    return ev


def command_label(cmd: str) -> str:
    """Metric label for a command: its verb, or the api name for api/bgapi (closed set)."""
    words = cmd.split(None, 2)
    if not words:
        return "empty"
    verb = words[0].lower()
    if verb in ("api", "bgapi"):
        name = words[1] if len(words) > 1 else ""
        return name if name in KNOWN_APIS else "api_other"
    return verb if verb in ("connect", "myevents", "linger", "event", "sendmsg", "exit",
                            "auth", "filter", "nolinger", "getvar", "resume") else "other"


def check_reply(cmd: str, ev: EslEvent) -> str:
    """The reply text of ``ev`` (Reply-Text or api body); ``EslCommandFailed`` on -ERR/-USAGE."""
    text = str(ev.data or "")
    if text.startswith(("-ERR", "-USAGE")):
        raise EslCommandFailed(cmd, text)
    return text


# ------------------------------------------------------------------------------------------
# The fixed protocol loops, mixed into greenswitch's classes.
# ------------------------------------------------------------------------------------------

_STOP = object()
Sink = Callable[[EslEvent], None]


class _Fixed:
    """Mixin: replaces greenswitch's receive/process loops and ``send``; see module doc."""

    # attributes provided by greenswitch's ESLProtocol
    sock: Any
    sock_file: Any
    connected: bool
    _run: bool
    _lingering: bool
    _commands_sent: list[gevent.event.AsyncResult]
    _auth_request_event: gevent.event.Event
    _esl_event_queue: Any
    _receive_events_greenlet: Any
    _process_events_greenlet: Any
    event_handlers: dict[str, list[Callable[[Any], None]]]

    def _init_fixed(self, command_timeout: float, metrics: Metrics | None, source: str) -> None:
        self.command_timeout = command_timeout
        self.metrics = metrics
        self.source = source
        self.event_sink: Sink | None = None
        self.close_reason: str | None = None
        self.last_rx = time.monotonic()      # when the peer last sent a byte
        self._waiters: list[tuple[Callable[[EslEvent], bool], gevent.event.AsyncResult, bool]] = []
        self._closed = gevent.event.Event()

    # -- receive side ------------------------------------------------------------------

    def receive_events(self) -> None:
        reader = FrameReader()
        reason = "closed by peer"
        try:
            while self._run:
                data = self.sock.recv(65536)
                self.last_rx = time.monotonic()
                if not data:
                    if reader.buffered:
                        reason = "closed by peer mid-frame"
                        self._count("truncated")
                    break
                reader.receive_data(data)
                while (frame := reader.next_frame()) is not None:
                    self._on_frame(frame)
        except EslProtocolError as e:
            reason = str(e)
            self._count("bad_frame")
            get_logger(source=self.source).warning("esl.protocol_error", error=str(e))
        except (OSError, ValueError) as e:   # ValueError: socket closed under us
            reason = f"socket error: {e}"
        finally:
            self._connection_lost(reason)

    def _on_frame(self, frame: Frame) -> None:
        ctype = frame.headers["Content-Type"]
        if ctype == "auth/request":
            self._auth_request_event.set()
        elif ctype in ("command/reply", "api/response"):
            ev = frame_to_event(frame)
            if not self._commands_sent:
                raise EslProtocolError("reply without a pending command", frame.body[:_SHOW])
            self._commands_sent.pop(0).set(ev)
        elif ctype == "text/disconnect-notice":
            if frame.headers.get("Content-Disposition") == "linger":
                self._lingering = True
            else:
                self.connected = False
            self._put(EslEvent(dict(frame.headers), frame.body.decode("utf-8", "replace")))
        elif ctype == "text/rude-rejection":
            self.connected = False
            self._auth_request_event.set()
        elif ctype in ("text/event-plain", "text/event-json", "text/event-xml", "log/data"):
            self._put(frame_to_event(frame))
        else:
            self._count("unknown_content_type")

    def _put(self, ev: EslEvent) -> None:
        self._esl_event_queue.put(ev)     # bounded: blocks the reader = TCP backpressure

    def _connection_lost(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self.connected = False
        self._run = False
        self._auth_request_event.set()
        pending, self._commands_sent[:] = list(self._commands_sent), []
        for r in pending:
            if not r.ready():
                r.set_exception(EslDisconnected(f"connection lost: {self.close_reason}"))
        try:
            self.sock.close()
        except OSError:
            pass
        if not self._closed.is_set():
            lost = EslEvent({"Content-Type": "text/disconnect-notice",
                             "Content-Disposition": "connection-lost"}, self.close_reason or "")
            try:
                self._esl_event_queue.put_nowait(lost)
            except gevent.queue.Full:
                pass
        self._closed.set()

    # -- dispatch side -----------------------------------------------------------------

    def process_events(self) -> None:
        while True:
            ev = self._esl_event_queue.get()
            if ev is _STOP:
                return
            self._dispatch(ev)

    def _dispatch(self, ev: EslEvent) -> None:
        h = ev.headers
        if h.get("Content-Type") == "text/disconnect-notice":
            key = "DISCONNECT"
        elif h.get("Event-Name") == "CUSTOM":
            key = h.get("Event-Subclass", "")
        else:
            key = h.get("Event-Name", "")
        handlers = self.event_handlers.get(key) or self.event_handlers.get("*") or []
        for fn in list(handlers):            # greenswitch's own handlers (its blocking waits)
            self._safe(fn, ev)
        self._resolve_waiters(ev)
        if self.event_sink is not None:
            self._safe(self.event_sink, ev)

    def _safe(self, fn: Callable[[EslEvent], None], ev: EslEvent) -> None:
        try:
            fn(ev)
        except Exception:
            get_logger(source=self.source).exception("esl.handler_failed", esl_event=ev.name)

    def expect(self, match: Callable[[EslEvent], bool],
               fail_on_hangup: bool = True) -> gevent.event.AsyncResult:
        """An AsyncResult set to the first later event for which ``match`` is true. It fails
        with ``EslDisconnected`` when the connection goes away first, and (if
        ``fail_on_hangup``) when CHANNEL_HANGUP arrives unmatched. Register before sending the
        command that causes the event. The caller bounds its own wait (``.get(timeout=…)``)."""
        r = gevent.event.AsyncResult()
        if self._closed.is_set():
            r.set_exception(EslDisconnected("connection already closed"))
        else:
            self._waiters.append((match, r, fail_on_hangup))
        return r

    def _resolve_waiters(self, ev: EslEvent) -> None:
        if not self._waiters:
            return
        hangup = ev.headers.get("Event-Name") == "CHANNEL_HANGUP"
        closed = (ev.headers.get("Content-Type") == "text/disconnect-notice"
                  and not self._lingering_notice(ev))
        keep = []
        for match, r, on_hangup in self._waiters:
            try:
                hit = match(ev)
            except Exception:
                hit = False
            if r.ready():
                continue
            if hit:
                r.set(ev)
            elif closed or (hangup and on_hangup):
                r.set_exception(EslDisconnected(f"channel gone ({ev.name or 'disconnect'})"))
            else:
                keep.append((match, r, on_hangup))
        self._waiters = keep

    @staticmethod
    def _lingering_notice(ev: EslEvent) -> bool:
        return ev.headers.get("Content-Disposition") == "linger"

    # -- commands ----------------------------------------------------------------------

    def send(self, data: str, timeout: float | None = None) -> EslEvent:
        """Send one command and return its reply event (``.data`` = Reply-Text or api body).

        Raises ``EslTimeout`` (connection then closed: replies are FIFO), ``EslDisconnected``,
        ``EslUsageError`` for ``event json|xml`` or a command that would break framing.
        """
        words = data.split()
        if not words or "\n\n" in data or data.endswith("\n"):
            shown = "auth ***" if words and words[0].lower() in ("auth", "userauth") \
                else data[:_SHOW]
            raise EslUsageError(f"malformed command {shown!r}")
        if words[0].lower() in ("event", "events") and len(words) > 1 \
                and words[1].lower() in ("json", "xml"):
            raise EslUsageError("event json/xml is not supported by greenswitch; use plain")
        if not self.connected:
            raise EslDisconnected(f"not connected ({self.close_reason or 'never connected'})")
        limit = self.command_timeout if timeout is None else timeout
        result = gevent.event.AsyncResult()
        self._commands_sent.append(result)
        started = time.monotonic()
        try:
            with gevent.Timeout(limit, EslTimeout(
                    f"no reply to {command_label(data)!r} within {limit:g} s")):
                self.sock.sendall((data + "\n\n").encode("utf-8"))
                reply: EslEvent = result.get()
        except EslTimeout as e:
            self._count("timeout")
            self.close_reason = str(e)
            self.abort()
            raise
        except (OSError, NotConnectedError, _GoneAway) as e:
            raise EslDisconnected(f"{type(e).__name__}: {e}") from None
        if self.metrics is not None:
            self.metrics.esl_command_latency.labels(command=command_label(data)).observe(
                time.monotonic() - started)
        return reply

    def abort(self) -> None:
        """Close the socket now (no ``exit``). Safe to call twice, from any greenlet."""
        self._run = False
        try:
            self.sock.shutdown(_pysocket.SHUT_RDWR)
        except OSError:
            pass
        self._connection_lost(self.close_reason or "closed by us")

    def stop(self, exit_timeout: float = 1.0) -> None:
        """Polite close: ``exit`` (bounded), then close; ends both loops. Idempotent."""
        if self.connected:
            try:
                self.send("exit", timeout=exit_timeout)
            except EslError:
                pass
        self.abort()
        try:
            self._esl_event_queue.put_nowait(_STOP)
        except gevent.queue.Full:
            pass
        for g in (self._receive_events_greenlet, self._process_events_greenlet):
            if g is not None and g is not gevent.getcurrent():
                g.join(timeout=exit_timeout)
                g.kill(block=False)
        try:
            self.sock_file.close()
        except OSError:
            pass

    def wait_closed(self, timeout: float | None) -> bool:
        """Wait until the connection is closed; True if it is."""
        return bool(self._closed.wait(timeout))

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _count(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.protocol_errors.labels(source=self.source, kind=kind).inc()


class OutboundConnection(_Fixed, OutboundSession):
    """One FreeSWITCH outbound (``socket`` app) connection, fixed. Use ``event_sink`` and
    ``expect()`` to receive events; never ``register_handle``."""

    def __init__(self, client_address: Any, sock: Any, command_timeout: float = 5.0,
                 metrics: Metrics | None = None) -> None:
        self._init_fixed(command_timeout, metrics, "esl_outbound")
        OutboundSession.__init__(self, client_address, sock)
        self._esl_event_queue = gevent.queue.Queue(EVENT_QUEUE_SIZE)

    def connect(self) -> dict[str, str]:
        """Send ``connect``; returns the channel data. ``EslProtocolError`` if the reply lacks
        the channel uuid (the connection is then closed)."""
        reply = self.send("connect")
        data = dict(reply.headers)
        if not (data.get("Unique-ID") or data.get("variable_uuid")):
            self.close_reason = "connect reply without Unique-ID"
            self._count("connect_reply")
            self.abort()
            raise EslProtocolError("connect reply without Unique-ID/variable_uuid",
                                   repr(sorted(data)[:10]).encode())
        data.setdefault("variable_uuid", data.get("Unique-ID", ""))
        self.session_data = data
        self._outbound_connected = True
        return data


class InboundConnection(_Fixed, InboundESL):
    """The inbound control connection, fixed: ``connect()`` is bounded as a whole."""

    def __init__(self, host: str, port: int, password: str, command_timeout: float = 5.0,
                 metrics: Metrics | None = None) -> None:
        self._init_fixed(command_timeout, metrics, "esl_inbound")
        InboundESL.__init__(self, host, port, password, timeout=command_timeout)
        self._esl_event_queue = gevent.queue.Queue(EVENT_QUEUE_SIZE)

    def connect(self) -> None:
        """TCP connect, wait for auth/request, authenticate — all within ``command_timeout``.
        Raises EslTimeout, EslDisconnected or EslAuthError; the socket is closed on failure."""
        try:
            with gevent.Timeout(self.command_timeout,
                                EslTimeout(f"connect/auth took over {self.command_timeout:g} s")):
                InboundESL.connect(self)
            keepalive(self.sock)
        except ValueError:
            self.close_reason = "password refused"
            self._abort_quietly()
            raise EslAuthError("FreeSWITCH refused the ESL password (esl.password)") from None
        except (NotConnectedError, OSError) as e:
            self.close_reason = str(e) or type(e).__name__
            self._abort_quietly()
            raise EslDisconnected(f"cannot connect: {self.close_reason}") from None
        except EslError:
            self._abort_quietly()
            raise

    def _abort_quietly(self) -> None:
        if getattr(self, "sock", None) is not None:
            self.abort()
        try:
            self._esl_event_queue.put_nowait(_STOP)
        except gevent.queue.Full:
            pass


# ------------------------------------------------------------------------------------------
# Accepting outbound connections.
# ------------------------------------------------------------------------------------------


def keepalive(sock: Any) -> None:
    """TCP keepalive on an ESL socket, so the kernel ends a connection whose peer vanished
    (probes after 30 s idle, every 10 s, 3 misses; the defaults are 2 hours)."""
    try:
        sock.setsockopt(_pysocket.SOL_SOCKET, _pysocket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(_pysocket, name):
                sock.setsockopt(_pysocket.IPPROTO_TCP, getattr(_pysocket, name), value)
    except OSError:
        pass


class OutboundListener:
    """A gevent ``StreamServer`` for FreeSWITCH's ``socket`` app. Each accepted socket is
    handed to ``handler(sock, address)`` in its own greenlet; the socket is closed when the
    handler returns. A failing handler is logged and ends only its connection."""

    def __init__(self, host: str, port: int, handler: Callable[[Any, Any], None],
                 max_connections: int = 1000) -> None:
        self._handler = handler
        # bounded: a flood of connections (or of calls we reject) cannot exhaust the hub
        self.server = StreamServer((host, port), self._handle,
                                   spawn=gevent.pool.Pool(max_connections))

    def start(self) -> None:
        self.server.start()

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def _handle(self, sock: Any, address: Any) -> None:
        try:
            sock.setsockopt(_pysocket.IPPROTO_TCP, _pysocket.TCP_NODELAY, 1)
        except OSError:
            pass
        keepalive(sock)
        try:
            self._handler(sock, address)
        except Exception:
            get_logger().exception("esl.connection_failed", peer=str(address))

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already accepted go on."""
        self.server.close()

    def stop(self, timeout: float = 1.0) -> None:
        self.server.stop(timeout=timeout)
