"""Optional LLM dialog: any OpenAI-compatible ``/v1/chat/completions`` endpoint, streamed.

How this works: ``LlmEngine.propose(turn)`` returns a proposal holding the request (history +
the caller's turn); nothing is sent until ``parts()`` is iterated. Then one HTTP/1.1 POST
with ``"stream": true`` goes out over a plain socket (stdlib ``socket``, so it is cooperative
under gevent's monkey-patching) framed by h11 (I/O-free HTTP); the body is parsed by
``SseParser``; each ``data:`` JSON chunk is decoded by ``decode_chunk``; content tokens go
through ``SentenceSplitter`` and every completed sentence is yielded at once (for TTS).
Tool calls are accumulated and, at the end of the stream, mapped to call actions by
``tool_action`` (transfer, hangup, collect_digits). Timing: when no sentence has come within
``llm_deadline_ms`` a filler prompt (``Prompt(filler=True)``) is yielded once and the wait
goes on; no byte for ``llm_stall_ms`` or a turn longer than ``llm_timeout_ms`` is a failure.
Any failure (endpoint down, HTTP error, garbage, unknown tool, stall) is logged as one line
and the proposal yields a safe fallback (apology + transfer to ``llm_fallback_transfer`` or
a request to repeat): the call goes on, nothing raises. The API key is sent as a Bearer
token and never logged. ``commit()`` appends the turn (user, assistant, tool results) to the
history kept in ``state()``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from callctl.dialog.base import (
    Action,
    CallContext,
    CollectDigits,
    DialogEngine,
    DialogError,
    Dtmf,
    Hangup,
    Listen,
    NoInput,
    NoMatch,
    Prompt,
    Proposal,
    ReplyPart,
    Speech,
    StaleProposal,
    Transfer,
    TurnInput,
)
from callctl.dialog.flow_model import DEST
from callctl.dialog.llm_stream import (
    HttpStream,
    LlmError,
    SentenceSplitter,
    ToolCall,
    decode_chunk,
    merge_tool_deltas,
)
from callctl.dialog.sse import SseError, SseParser
from callctl.log import get_logger

#: Fallback sentences after an LLM failure (apology, then transfer or ask to repeat).
FALLBACK_SORRY = "I'm sorry, I'm having trouble right now."
FALLBACK_TRANSFER = "Let me transfer you to a colleague."
FALLBACK_REPEAT = "Could you say that again, please?"

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "transfer",
        "description": "Transfer the caller to a person, queue or extension.",
        "parameters": {"type": "object", "properties": {
            "destination": {"type": "string",
                            "description": "Extension, sip: URI or queue:<name>."}},
            "required": ["destination"]}}},
    {"type": "function", "function": {
        "name": "hangup",
        "description": "End the call after saying goodbye.",
        "parameters": {"type": "object", "properties": {
            "reason": {"type": "string"}}}}},
    {"type": "function", "function": {
        "name": "collect_digits",
        "description": "Ask the caller to key in digits on the phone keypad.",
        "parameters": {"type": "object", "properties": {
            "min_digits": {"type": "integer"}, "max_digits": {"type": "integer"}},
            "required": ["max_digits"]}}},
]


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LlmSettings:
    url: str
    model: str = ""
    api_key: str = field(default="", repr=False)
    deadline_ms: int = 1500
    stall_ms: int = 5000
    timeout_ms: int = 20000
    system_prompt: str = ""
    greeting: str = "Hello, how can I help you?"
    filler: str = "One moment."
    fallback_transfer: str = ""
    max_history: int = 40

    @classmethod
    def from_config(cls, d: Any) -> LlmSettings:
        """From a ``callctl.config.DialogConfig``."""
        return cls(url=d.llm_url, model=d.llm_model, api_key=d.llm_api_key,
                   deadline_ms=d.llm_deadline_ms, stall_ms=d.llm_stall_ms,
                   timeout_ms=d.llm_timeout_ms, system_prompt=d.llm_system_prompt,
                   greeting=d.llm_greeting, filler=d.llm_filler,
                   fallback_transfer=d.llm_fallback_transfer, max_history=d.llm_max_history)



def tool_action(name: str, arguments: str, fallback_transfer: str = "") -> Action:
    """The call action for one complete tool call. Raises LlmError for an unknown tool or
    arguments that do not fit."""
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        raise LlmError(f"tool {name!r}: arguments are not JSON: {arguments[:80]!r}") from None
    if not isinstance(args, dict):
        raise LlmError(f"tool {name!r}: arguments are not an object")
    if name == "transfer":
        dest = args.get("destination") or fallback_transfer
        if not isinstance(dest, str) or not DEST.fullmatch(dest):
            raise LlmError(f"tool transfer: bad destination {str(dest)[:60]!r}")
        return Transfer(dest)
    if name == "hangup":
        return Hangup("NORMAL_CLEARING")
    if name == "collect_digits":
        lo, hi = args.get("min_digits", 1), args.get("max_digits", 20)
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 64):
            raise LlmError(f"tool collect_digits: bad digit counts {lo!r}..{hi!r}")
        return CollectDigits(min_digits=lo, max_digits=hi)
    raise LlmError(f"unknown tool {name[:40]!r}")


# --------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------


def _turn_text(turn: TurnInput) -> str:
    if isinstance(turn, Speech):
        return turn.text
    if isinstance(turn, Dtmf):
        return f"(The caller keyed in: {turn.digits})"
    if isinstance(turn, NoInput):
        return "(The caller said nothing.)"
    assert isinstance(turn, NoMatch)
    return "(The caller's words could not be understood.)"


class _LlmProposal(Proposal):
    def __init__(self, engine: LlmEngine, user: dict[str, Any] | None, version: int,
                 fixed: list[ReplyPart] | None = None) -> None:
        self._engine, self._user, self._version = engine, user, version
        self._fixed = fixed
        self._used = False
        self._texts: list[str] = []
        self._calls: list[ToolCall] = []
        self._actions: list[Action] = []
        self._stream: HttpStream | None = None

    def parts(self) -> Iterator[ReplyPart]:
        if self._used:
            raise DialogError("parts() of a proposal can be iterated only once")
        self._used = True
        source = iter(self._fixed) if self._fixed is not None else self._run()
        for part in source:
            if isinstance(part, Prompt) and not part.filler:
                self._texts.append(part.text)
            elif not isinstance(part, Prompt):
                self._actions.append(part)
            yield part

    def _run(self) -> Iterator[ReplyPart]:
        s, log = self._engine.settings, self._engine.log
        try:
            yield from self._stream_reply(s)
        except (LlmError, SseError) as e:
            log.error("llm_turn_failed", error=str(e))
            yield from self._fallback(s)
        except Exception as e:  # never let a bad endpoint end the call
            log.exception("llm_turn_crashed", error=repr(e)[:200])
            yield from self._fallback(s)
        finally:
            self.cancel()

    def _stream_reply(self, s: LlmSettings) -> Iterator[ReplyPart]:
        t0 = time.monotonic()
        first_deadline = t0 + s.deadline_ms / 1000
        end = t0 + s.timeout_ms / 1000
        body = json.dumps({
            "model": s.model, "stream": True, "tools": TOOLS,
            "messages": self._engine._messages(self._user),
        }).encode()
        self._stream = HttpStream(s.url, s.api_key, body, s.stall_ms / 1000)
        parser, splitter = SseParser(), SentenceSplitter()
        calls: dict[int, ToolCall] = {}
        spoke = filler = done = False
        last = time.monotonic()
        while not done:
            now = time.monotonic()
            limit = min(end, last + s.stall_ms / 1000)
            if not spoke and not filler:
                limit = min(limit, first_deadline)
            if limit <= now:
                if not spoke and not filler and now >= first_deadline:
                    filler = True
                    yield Prompt(s.filler, filler=True)
                    continue
                raise LlmError("turn timed out" if now >= end else
                               f"stream stalled for {s.stall_ms} ms")
            data = self._stream.read(limit - now)
            if data is None:
                continue
            last = time.monotonic()
            for ev in (parser.feed(data) if data else parser.close()):
                if ev.data.strip() == "[DONE]":
                    done = True
                    break
                chunk = decode_chunk(ev.data)
                merge_tool_deltas(calls, chunk.tool_calls)
                for sentence in splitter.feed(chunk.content):
                    spoke = True
                    yield Prompt(sentence, static=False)
            done = done or data == b""
        rest = splitter.flush()
        if rest:
            spoke = True
            yield Prompt(rest, static=False)
        self._calls = [calls[i] for i in sorted(calls)]
        actions = [tool_action(c.name, c.arguments, s.fallback_transfer) for c in self._calls]
        if not spoke and not actions:
            raise LlmError("endpoint sent an empty reply")
        yield from actions

    def _fallback(self, s: LlmSettings) -> Iterator[ReplyPart]:
        self._calls = []
        yield Prompt(FALLBACK_SORRY)
        if s.fallback_transfer:
            yield Prompt(FALLBACK_TRANSFER)
            yield Transfer(s.fallback_transfer)
        else:
            yield Prompt(FALLBACK_REPEAT)

    def cancel(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def commit(self) -> None:
        """Record what was produced so far (all of it, or up to a barge-in) in the history
        and close the stream."""
        self.cancel()
        self._engine._commit(self._version, self._user, " ".join(self._texts), self._calls,
                             self._actions)

    @property
    def listen(self) -> Listen | None:
        return _listen_after(self._actions, self._engine.listen)


def _listen_after(actions: list[Action], current: Listen | None) -> Listen | None:
    if any(isinstance(a, Transfer | Hangup) for a in actions):
        return None
    digits = next((a for a in actions if isinstance(a, CollectDigits)), None)
    if digits is not None:
        return Listen(None, True, digits.max_digits, digits.terminator)
    return Listen(None, True) if current is not None else None


class LlmEngine(DialogEngine):
    """A free conversation with an LLM for one call."""

    def __init__(self, settings: LlmSettings, ctx: CallContext) -> None:
        self.settings, self.ctx = settings, ctx
        self.log = get_logger(call_uuid=ctx.call_uuid, component="llm")
        self.history: list[dict[str, Any]] = []
        self._listen: Listen | None = Listen(None, True)
        self._started = False
        self._version = 0

    def _messages(self, user: dict[str, Any] | None) -> list[dict[str, Any]]:
        system = [{"role": "system", "content": self.settings.system_prompt}] \
            if self.settings.system_prompt else []
        return [*system, *self.history, *([user] if user else [])]

    def start(self) -> Proposal:
        return _LlmProposal(self, None, self._version, [Prompt(self.settings.greeting)])

    def propose(self, turn: TurnInput) -> Proposal:
        if self._listen is None:
            return _LlmProposal(self, None, self._version, [])
        return _LlmProposal(self, {"role": "user", "content": _turn_text(turn)}, self._version)

    def _commit(self, version: int, user: dict[str, Any] | None, text: str,
                calls: list[ToolCall], actions: list[Action]) -> None:
        if version != self._version:
            raise StaleProposal("the conversation moved on since this proposal was made")
        if user:
            self.history.append(user)
        msg: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            msg["tool_calls"] = [
                {"id": c.id or f"call_{i}", "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                for i, c in enumerate(calls)]
        if text or calls:
            self.history.append(msg)
        for i, c in enumerate(calls):
            self.history.append({"role": "tool", "tool_call_id": c.id or f"call_{i}",
                                 "content": "done"})
        excess = len(self.history) - self.settings.max_history
        if excess > 0:
            del self.history[:excess]
            while self.history and self.history[0]["role"] != "user":
                del self.history[0]
        self._listen = _listen_after(actions, self._listen)
        self._started = True
        self._version += 1

    @property
    def listen(self) -> Listen | None:
        return self._listen

    def state(self) -> dict[str, Any]:
        lis = self._listen
        return {"kind": "llm", "history": json.loads(json.dumps(self.history)),
                "done": lis is None, "max_digits": lis.max_digits if lis else None}

    def restore(self, data: Mapping[str, Any]) -> None:
        history = data.get("history")
        if data.get("kind") != "llm" or not isinstance(history, list) or not all(
                isinstance(m, dict) and m.get("role") in ("user", "assistant", "tool")
                for m in history):
            raise DialogError("state is not an LLM conversation")
        self.history = [dict(m) for m in history]
        digits = data.get("max_digits")
        self._listen = None if data.get("done") else Listen(
            None, True, digits if isinstance(digits, int) else None)
        self._started = True
        self._version += 1


__all__ = [
    "FALLBACK_REPEAT", "FALLBACK_SORRY", "FALLBACK_TRANSFER", "TOOLS", "LlmEngine",
    "LlmSettings", "tool_action",
]
