"""The wire side of the LLM client: HTTP streaming and OpenAI chat-completion chunks.

``HttpStream`` sends one POST over a stdlib socket (cooperative under gevent's
monkey-patching) framed by h11 and hands back body bytes with a per-read timeout, so the
caller can say a filler or give up without losing the stream. Everything else here is
I/O-free: ``decode_chunk`` turns one SSE ``data:`` payload into a ``Chunk`` (content delta,
tool-call fragments), ``merge_tool_deltas`` puts split tool calls back together and
``SentenceSplitter`` cuts streamed text into sentences for TTS. The peer's failures and
garbage raise ``LlmError`` whose text is safe to log (it never holds the API key).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

MAX_ERROR_BODY = 4096


class LlmError(Exception):
    """The LLM endpoint failed or sent something unusable. The text is safe to log."""




def chat_url(base: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of the chat-completions endpoint for a base URL:
    ``http://h:8080`` and ``http://h:8080/v1`` both give path ``/v1/chat/completions``."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LlmError(f"llm_url must be http:// or https://, got {parts.scheme or '?'}://")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path if path.endswith("/v1") else path + "/v1") + "/chat/completions"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port, path






@dataclass(frozen=True)
class ToolDelta:
    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class Chunk:
    content: str = ""
    tool_calls: tuple[ToolDelta, ...] = ()
    finish_reason: str | None = None


def decode_chunk(data: str) -> Chunk:
    """One ``data:`` payload of a chat-completions stream. Raises LlmError on garbage or an
    in-stream error object. A chunk without choices (usage) is an empty Chunk."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise LlmError(f"stream chunk is not JSON: {data[:80]!r}") from None
    if not isinstance(obj, dict):
        raise LlmError(f"stream chunk is not an object: {data[:80]!r}")
    if "error" in obj:
        err = obj["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        raise LlmError(f"endpoint error in stream: {str(msg)[:200]}")
    choices = obj.get("choices")
    if not choices:
        return Chunk()
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise LlmError(f"stream chunk has bad choices: {data[:80]!r}")
    choice = choices[0]
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        raise LlmError(f"stream chunk has a bad delta: {data[:80]!r}")
    content = delta.get("content") or ""
    if not isinstance(content, str):
        raise LlmError(f"stream chunk content is not text: {data[:80]!r}")
    tools = []
    for i, tc in enumerate(delta.get("tool_calls") or []):
        if not isinstance(tc, dict):
            raise LlmError(f"stream chunk has a bad tool call: {data[:80]!r}")
        fn = tc.get("function") or {}
        if not isinstance(fn, dict):
            raise LlmError(f"stream chunk has a bad tool call: {data[:80]!r}")
        index = tc.get("index", i)
        values = (tc.get("id") or "", fn.get("name") or "", fn.get("arguments") or "")
        if not isinstance(index, int) or not all(isinstance(v, str) for v in values):
            raise LlmError(f"stream chunk has a bad tool call: {data[:80]!r}")
        tools.append(ToolDelta(index, *values))
    finish = choice.get("finish_reason")
    return Chunk(content, tuple(tools), finish if isinstance(finish, str) else None)


@dataclass
class ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


def merge_tool_deltas(calls: dict[int, ToolCall], deltas: tuple[ToolDelta, ...]) -> None:
    """Accumulate streamed tool-call fragments by index (names and arguments arrive split)."""
    for d in deltas:
        if d.index not in calls and len(calls) >= 16:
            raise LlmError("more than 16 tool calls in one turn")
        call = calls.setdefault(d.index, ToolCall())
        call.id = call.id or d.id
        if d.name and d.name != call.name:    # split names append; repeated ones do not
            call.name += d.name
        call.arguments += d.arguments
        if len(call.arguments) > 16384:
            raise LlmError("tool call arguments longer than 16 KiB")


class SentenceSplitter:
    """Cuts streamed text into sentences: at ``.``, ``!``, ``?`` (with closing quotes) followed
    by whitespace, or at a newline. Abbreviations like "Mr." and decimals like "3.5" stay."""

    _END = re.compile(r"([.!?…]+[\"')\]]*)\s+|\n+")
    _ABBREV = re.compile(r"(?:\b(?:mr|mrs|ms|dr|st|vs|etc|e\.g|i\.e|no)|\b[a-z])\.$", re.I)

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        self._buf += text
        out = []
        pos = 0
        for m in self._END.finditer(self._buf):
            piece = self._buf[pos:m.end()].strip()
            if m.group(1) and self._ABBREV.search(self._buf[pos:m.start() + len(m.group(1))]):
                continue
            if piece:
                out.append(piece)
            pos = m.end()
        self._buf = self._buf[pos:]
        return out

    def flush(self) -> str | None:
        rest, self._buf = self._buf.strip(), ""
        return rest or None




class HttpStream:
    """One streamed POST. ``read(timeout)`` returns body bytes, b"" at the end, or None when
    ``timeout`` passed without data (the caller decides: filler or stall)."""

    def __init__(self, url: str, api_key: str, body: bytes, connect_timeout: float) -> None:
        scheme, host, port, path = chat_url(url)
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.sock: socket.socket | None = None
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError:
            raise LlmError(f"connect to {host}:{port} timed out") from None
        except OSError as e:
            raise LlmError(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
        if scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self.sock = sock
        headers = [("Host", f"{host}:{port}"), ("Content-Type", "application/json"),
                   ("Accept", "text/event-stream"), ("Content-Length", str(len(body))),
                   ("Connection", "close")]
        if api_key:
            headers.append(("Authorization", f"Bearer {api_key}"))
        out = self.conn.send(h11.Request(method="POST", target=path, headers=headers))
        out = (out or b"") + (self.conn.send(h11.Data(data=body)) or b"")
        out += self.conn.send(h11.EndOfMessage()) or b""
        sock.sendall(out)
        self.status = 0

    def _recv(self, timeout: float) -> bool:
        assert self.sock is not None
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError as e:
            raise LlmError(f"connection lost: {e.strerror or e}") from None
        self.conn.receive_data(data)
        return True

    def read(self, timeout: float) -> bytes | None:
        """Next body bytes (b"" at end of message), or None if nothing came in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                raise LlmError(f"bad HTTP from endpoint: {e}") from None
            if ev is h11.NEED_DATA:
                if not self._recv(deadline - time.monotonic()):
                    return None
                continue
            if isinstance(ev, h11.Response):
                self.status = ev.status_code
                if ev.status_code != 200:
                    raise LlmError(f"HTTP {ev.status_code}: {self._error_body(deadline)}")
                continue
            if isinstance(ev, h11.Data):
                return bytes(ev.data)
            if isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                return b""

    def _error_body(self, deadline: float) -> str:
        body = b""
        try:
            while len(body) < MAX_ERROR_BODY:
                ev = self.conn.next_event()
                if ev is h11.NEED_DATA:
                    if not self._recv(deadline - time.monotonic()):
                        break
                elif isinstance(ev, h11.Data):
                    body += ev.data
                else:
                    break
        except (h11.RemoteProtocolError, LlmError):
            pass
        return body[:200].decode("utf-8", "replace").strip() or "(no body)"

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


__all__ = [
    "Chunk", "HttpStream", "LlmError", "SentenceSplitter", "ToolCall", "ToolDelta", "chat_url",
    "decode_chunk", "merge_tool_deltas",
]
