"""mod_audio_fork WebSocket server: wsproto on a gevent StreamServer.

How this works: ``ForkServer.register(uuid)`` makes a random token and a per-call ``Inbox`` and
returns the URL to put in ``uuid_audio_fork <uuid> start <url> …``. FreeSWITCH connects to
``/fork/<uuid>?token=<token>`` offering subprotocol ``audio.drachtio.org`` (PROTOCOL.md §5.4).
The upgrade is refused (403 bad/missing token, 404 unknown call or path, counted in
``ws_rejected{reason}``) unless the uuid is registered and the token matches. Accepted: the
101 selects ``audio.drachtio.org`` when offered. Then the first text frame is the metadata
(JSON by convention; a non-JSON metadata is kept raw and counted), binary frames are L16
(decoded by ``PcmDecoder``: odd bytes carried, stereo split, resampled), an empty binary frame
is graceful-shutdown's "no more audio", later text frames are passed on. Messages larger than
``max_message_bytes`` (after reassembling fragments) close the socket with 1009; WebSocket
protocol violations close it with wsproto's code; non-WebSocket bytes get a 400 and a close;
each is counted in ``protocol_errors{source="fork",kind}`` and ends only that connection.
A second connection for the same call replaces the first (mod_audio_fork reconnect after a
stop/start). ``send_text``/``send_binary`` write server messages (killAudio, JSON, jambonz
bidirectional audio) to the call's live fork.

One greenlet per connection (at most ``max_connections``) reads the socket; writes from other
greenlets are serialised by a per-connection lock. Every read has a timeout, and a peer that
ignores our Close frame is cut off after 2 s.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
import gevent.lock
import gevent.pool
import gevent.socket
from gevent.server import StreamServer
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from callctl.log import get_logger
from callctl.media.audio import (
    MIX_CHANNELS,
    AudioFormatError,
    AudioFrame,
    AudioRateSuspect,
    ForkClosed,
    ForkConnected,
    ForkDrained,
    ForkText,
    Inbox,
    InboxFull,
    MetadataError,
    PcmDecoder,
    RateMonitor,
    parse_metadata,
)
from callctl.metrics import Metrics

if TYPE_CHECKING:
    from callctl.config import MediaConfig

SUBPROTOCOL = "audio.drachtio.org"
_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{8,128}")
_MAX_TARGET = 2048


class ForkRequestError(ValueError):
    """The upgrade request's target is not ``/fork/<uuid>?token=<token>`` (peer garbage).

    ``status`` is the HTTP status to answer with; ``reason`` the ``ws_rejected`` label."""

    def __init__(self, message: str, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ForkTarget:
    """The parsed request target: call uuid and token (``None`` when absent)."""

    call_uuid: str
    token: str | None


def parse_fork_target(target: str) -> ForkTarget:
    """Parse ``/fork/<uuid>?token=<token>``. Raises ``ForkRequestError`` for anything else.

    A missing token parses (``token=None``): the caller decides (403). Extra query keys are
    ignored; a repeated ``token`` is an error.
    """
    if len(target) > _MAX_TARGET:
        raise ForkRequestError(f"request target longer than {_MAX_TARGET}", 414, "bad_path")
    path, _, query = target.partition("?")
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "" or parts[1] != "fork":
        raise ForkRequestError(f"path is not /fork/<uuid>: {path[:80]!r}", 404, "bad_path")
    uuid = urllib.parse.unquote(parts[2])
    if not _UUID_RE.fullmatch(uuid):
        raise ForkRequestError(f"bad call uuid in path: {parts[2][:80]!r}", 404, "bad_path")
    try:
        params = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False,
                                       max_num_fields=16)
    except ValueError as e:
        raise ForkRequestError(f"bad query string: {query[:80]!r}", 404, "bad_path") from e
    tokens = params.get("token", [])
    if len(tokens) > 1:
        raise ForkRequestError("token given more than once", 403, "bad_token")
    token = tokens[0] if tokens else None
    if token is not None and not _TOKEN_RE.fullmatch(token):
        raise ForkRequestError("malformed token", 403, "bad_token")
    return ForkTarget(uuid, token)


@dataclass
class _Call:
    token: str
    inbox: Inbox
    rate: int
    mix: str
    conn: _Conn | None = None
    connections: int = 0


class _Conn:
    """One accepted fork WebSocket; owns the wsproto state, writes under a lock."""

    def __init__(self, sock: gevent.socket.socket, ws: WSConnection) -> None:
        self.sock = sock
        self.ws = ws
        self.lock = gevent.lock.Semaphore()
        self.closed = False

    def send(self, event: Event, timeout: float = 5.0) -> bool:
        """Write one event; False if the connection is gone."""
        with self.lock:
            if self.closed or self.ws.state not in (ConnectionState.OPEN,
                                                    ConnectionState.REMOTE_CLOSING,
                                                    ConnectionState.CONNECTING):
                return False
            try:
                data = self.ws.send(event)
                with gevent.Timeout(timeout):
                    self.sock.sendall(data)
                return True
            except (OSError, LocalProtocolError, gevent.Timeout):
                self.closed = True
                return False

    def close(self, code: int, reason: str = "", linger_s: float = 2.0) -> None:
        """Send Close; if the peer has not closed within ``linger_s``, cut the socket so the
        reading greenlet ends (a peer that ignores our Close cannot hold it)."""
        self.send(CloseConnection(code=code, reason=reason))
        self.closed = True
        gevent.spawn_later(linger_s, self._abort)

    def _abort(self) -> None:
        try:
            self.sock.shutdown(gevent.socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


class ForkServer:
    """Accepts mod_audio_fork connections for registered calls; see the module docstring."""

    def __init__(
        self,
        metrics: Metrics,
        host: str = "127.0.0.1",
        port: int = 8041,
        public_url: str = "ws://127.0.0.1:8041",
        sample_rate: int = 8000,
        inbox_frames: int = 500,
        max_message_bytes: int = 64 * 1024,
        handshake_timeout_s: float = 10.0,
        idle_timeout_s: float = 30.0,
        rate_check: bool = True,
        max_connections: int = 1000,
    ) -> None:
        self.metrics = metrics
        self.public_url = public_url.rstrip("/")
        self.sample_rate = sample_rate
        self.inbox_frames = inbox_frames
        self.max_message_bytes = max_message_bytes
        self.handshake_timeout_s = handshake_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.rate_check = rate_check
        self._calls: dict[str, _Call] = {}
        self._server = StreamServer((host, port), self._handle,
                                    spawn=gevent.pool.Pool(max_connections))
        self.log = get_logger().bind(component="forkserver")

    @classmethod
    def from_config(cls, cfg: MediaConfig, metrics: Metrics) -> ForkServer:
        """A server with the ``[media]`` settings (call ``start()`` to listen)."""
        return cls(metrics, cfg.listen_host, cfg.listen_port, cfg.fork_base_url, cfg.sample_rate,
                   cfg.inbox_frames)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and start accepting (returns at once)."""
        self._server.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting and close every connection (each fork sees Close 1001)."""
        for call in list(self._calls.values()):
            if call.conn is not None:
                call.conn.close(1001, "server shutting down")
        self._server.stop(timeout=timeout)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address[:2]
        return str(host), int(port)

    # -- call registry --------------------------------------------------------------------------

    def register(self, call_uuid: str, rate: int | None = None,
                 mix: str = "mono") -> tuple[str, Inbox]:
        """Allow one call's fork; returns ``(url_with_token, inbox)``.

        ``rate``/``mix`` are what the ``uuid_audio_fork start`` command asks for (default the
        pipeline rate, mono); the inbox gets mono frames at ``self.sample_rate``.
        """
        if not _UUID_RE.fullmatch(call_uuid):
            raise ValueError(f"call uuid {call_uuid!r} cannot be used in a fork URL")
        if mix not in MIX_CHANNELS:
            raise ValueError(f"mix {mix!r} not one of {sorted(MIX_CHANNELS)}")
        token = secrets.token_urlsafe(24)
        inbox = Inbox(self.inbox_frames, self.metrics)
        self._calls[call_uuid] = _Call(token, inbox, rate or self.sample_rate, mix)
        return f"{self.public_url}/fork/{call_uuid}?token={token}", inbox

    def unregister(self, call_uuid: str) -> None:
        """Forget the call and close its fork (if connected). Idempotent."""
        call = self._calls.pop(call_uuid, None)
        if call is not None and call.conn is not None:
            call.conn.close(1000, "call ended")

    def connected(self, call_uuid: str) -> bool:
        call = self._calls.get(call_uuid)
        return call is not None and call.conn is not None and not call.conn.closed

    # -- server messages ------------------------------------------------------------------------

    def send_text(self, call_uuid: str, text: str) -> bool:
        """Send a text frame (e.g. ``{"type":"killAudio"}``); False if no live fork."""
        conn = self._live(call_uuid)
        return conn is not None and conn.send(TextMessage(data=text))

    def send_binary(self, call_uuid: str, pcm: bytes) -> bool:
        """Send L16 audio (jambonz bidirectional streaming); False if no live fork."""
        conn = self._live(call_uuid)
        return conn is not None and conn.send(BytesMessage(data=pcm))

    def _live(self, call_uuid: str) -> _Conn | None:
        call = self._calls.get(call_uuid)
        if call is None or call.conn is None or call.conn.closed:
            return None
        return call.conn

    # -- connection handling --------------------------------------------------------------------

    def _error(self, kind: str) -> None:
        self.metrics.protocol_errors.labels(source="fork", kind=kind).inc()

    def _handle(self, sock: gevent.socket.socket, address: Any) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        try:
            request = self._handshake(sock, ws)
            if request is not None:
                self._accept(sock, ws, request)
        except OSError as e:
            self.log.info("fork socket error", error=str(e), peer=str(address))
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _handshake(self, sock: gevent.socket.socket, ws: WSConnection) -> Request | None:
        """Read until the upgrade request; answer refusals here. None = connection done."""
        deadline = time.monotonic() + self.handshake_timeout_s
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                self._error("handshake_timeout")
                return None
            if not data:
                return None
            try:
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        return event
            except RemoteProtocolError as e:
                self._error("not_websocket")
                self.log.info("fork: not a WebSocket upgrade", error=str(e),
                              head=bytes(data[:60]))
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                             b"connection: close\r\n\r\n")
                return None

    def _reject(self, sock: gevent.socket.socket, ws: WSConnection, status: int,
                reason: str) -> None:
        self.metrics.ws_rejected.labels(reason=reason).inc()
        sock.sendall(ws.send(RejectConnection(
            status_code=status, headers=[(b"connection", b"close")], has_body=False)))

    def _accept(self, sock: gevent.socket.socket, ws: WSConnection, req: Request) -> None:
        try:
            target = parse_fork_target(req.target)
        except ForkRequestError as e:
            self.log.info("fork refused", reason=e.reason, error=str(e))
            self._reject(sock, ws, e.status, e.reason)
            return
        call = self._calls.get(target.call_uuid)
        if call is None:
            self._reject(sock, ws, 404, "unknown_call")
            return
        if target.token is None:
            self._reject(sock, ws, 403, "missing_token")
            return
        if not hmac.compare_digest(target.token.encode(), call.token.encode()):
            self._reject(sock, ws, 403, "bad_token")
            return
        sub = SUBPROTOCOL if SUBPROTOCOL in req.subprotocols else None
        sock.sendall(ws.send(AcceptConnection(subprotocol=sub)))
        conn = _Conn(sock, ws)
        old, call.conn = call.conn, conn
        call.connections += 1
        if old is not None:
            old.close(1000, "replaced by a new fork connection")
        log = self.log.bind(call_uuid=target.call_uuid)
        code, reason = 1006, "connection lost"
        try:
            code, reason = self._serve(conn, call, target.call_uuid, log)
        except InboxFull as e:
            log.error("fork: call inbox stuck; closing fork", error=str(e))
            code, reason = 1011, "consumer stuck"
            conn.close(code, reason)
        except OSError:
            raise                                   # the socket itself: _handle logs it
        except Exception as e:                      # our bug: this fork ends, cleanly
            self._error("internal")
            log.exception("fork: internal error; closing fork", error=repr(e))
            code, reason = 1011, "internal error"
            conn.close(code, reason)
        finally:
            conn.closed = True
            if call.conn is conn:
                call.conn = None
                try:
                    call.inbox.put_control(ForkClosed(code, reason, time.monotonic()))
                except InboxFull:
                    pass

    def _serve(self, conn: _Conn, call: _Call, uuid: str, log: Any) -> tuple[int, str]:
        """Read frames until close; returns the close (code, reason)."""
        sock, ws = conn.sock, conn.ws
        decoder = PcmDecoder(call.rate, MIX_CHANNELS[call.mix], self.sample_rate)
        monitor = RateMonitor(decoder.bytes_per_second) if self.rate_check else None
        got_metadata = False
        buf: list[bytes | str] = []
        size = 0
        idle = 0
        sock.settimeout(self.idle_timeout_s)
        while True:
            try:
                data = sock.recv(65536)
                idle = 0
            except TimeoutError:
                idle += 1
                if idle >= 2:
                    conn.close(1001, "idle")
                    return 1001, "idle timeout"
                conn.send(Ping(payload=b"callctl"))
                continue
            if conn.closed:
                return 1000, "replaced"
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, Message):
                    size += len(event.data)
                    if size > self.max_message_bytes:
                        self._error("oversized")
                        log.warning("fork: message too big", limit=self.max_message_bytes)
                        conn.close(1009, "message too big")
                        return 1009, "message too big"
                    buf.append(event.data)
                    if not event.message_finished:
                        continue
                    now = time.monotonic()
                    if isinstance(event, TextMessage):
                        text = "".join(b for b in buf if isinstance(b, str))
                        if not got_metadata:
                            got_metadata = True
                            try:
                                decoder = self._connected(call, uuid, text, now)
                            except AudioFormatError as e:
                                self._error("audio_format")
                                log.warning("fork: unusable audio format", error=str(e))
                                conn.close(e.close_code, str(e)[:100])
                                return e.close_code, str(e)
                            if monitor is not None:
                                monitor = RateMonitor(decoder.bytes_per_second)
                        else:
                            call.inbox.put_control(ForkText(text, now))
                    else:
                        payload = b"".join(b for b in buf if isinstance(b, bytes))
                        if not got_metadata:  # fork started without metadata
                            got_metadata = True
                            self._connected(call, uuid, None, now)
                        if not payload:
                            call.inbox.put_control(ForkDrained(now))
                        else:
                            self._audio(call, decoder, monitor, payload, now, log)
                    buf, size = [], 0
                elif isinstance(event, Ping):
                    conn.send(event.response())
                elif isinstance(event, CloseConnection):
                    if event.code not in (1000, 1001, 1005, 1006):
                        self._error("ws_protocol")
                        log.info("fork closed with error", code=event.code,
                                 reason=event.reason)
                    if ws.state is ConnectionState.REMOTE_CLOSING:
                        conn.send(event.response())
                    elif ws.state is ConnectionState.OPEN:  # wsproto found garbage
                        conn.close(event.code, (event.reason or "")[:100])
                    return event.code, event.reason or ""
            if not data:
                return 1006, "EOF without close frame"

    def _connected(self, call: _Call, uuid: str, text: str | None, now: float) -> PcmDecoder:
        """Handle the metadata (or its absence); returns the decoder for the declared format."""
        meta: dict[str, Any] | None = None
        rate, mix = call.rate, call.mix
        if text is not None:
            try:
                meta = parse_metadata(text)
            except MetadataError as e:
                self._error("metadata")
                self.log.info("fork metadata is not a JSON object", call_uuid=uuid,
                              error=str(e))
            if meta is not None:      # a key that is absent or null keeps the registered one
                if meta.get("sampleRate") is not None:
                    rate = int(meta["sampleRate"])
                if meta.get("mix") is not None:
                    mix = str(meta["mix"])
        call.inbox.put_control(ForkConnected(uuid, meta, text, call.connections > 1, now))
        return PcmDecoder(rate, MIX_CHANNELS[mix], self.sample_rate)

    def _audio(self, call: _Call, decoder: PcmDecoder, monitor: RateMonitor | None,
               payload: bytes, now: float, log: Any) -> None:
        samples = decoder.decode(payload)
        if monitor is not None:
            suspect = monitor.feed(len(payload), now)
            if suspect is not None:
                self._error("audio_rate")
                log.warning("fork: audio faster than its declared format",
                            expected_bytes_per_s=round(suspect[0]),
                            observed_bytes_per_s=round(suspect[1]),
                            declared_rate=decoder.in_rate, channels=decoder.channels)
                call.inbox.put_control(AudioRateSuspect(*suspect, at=now))
        if len(samples):
            call.inbox.put_audio(AudioFrame(samples, self.sample_rate, now))
