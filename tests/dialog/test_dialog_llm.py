"""LLM client against a local server speaking the OpenAI streaming format (real sockets)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from testkit import free_port

from callctl import config
from callctl.dialog.base import (
    CallContext,
    CollectDigits,
    Dtmf,
    Hangup,
    Prompt,
    Speech,
    StaleProposal,
    Transfer,
)
from callctl.dialog.llm import (
    FALLBACK_REPEAT,
    FALLBACK_SORRY,
    LlmEngine,
    LlmSettings,
    tool_action,
)
from callctl.dialog.llm_stream import LlmError, SentenceSplitter, chat_url
from callctl.log import setup

KEY = "sk-test-very-secret-key"

Script = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((dict(self.headers), json.loads(body), self.path))
        self.server.script(self)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def sse(self, obj: Any) -> None:
        self.chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def end_stream(self, done: bool = True) -> None:
        if done:
            self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[dict[str, str], dict[str, Any], str]] = []
        self.script: Script = lambda h: None


def content(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def tool(index: int, name: str = "", args: str = "", id_: str = "") -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if name:
        call["function"]["name"] = name
        call["id"] = id_ or f"call_{index}"
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def logs() -> io.StringIO:
    buf = io.StringIO()
    setup(config.LogConfig(format="json", level="debug"), stream=buf)
    return buf


def settings(url: str, **kw: Any) -> LlmSettings:
    base: dict[str, Any] = dict(url=url, model="test-model", api_key=KEY, deadline_ms=300,
                                stall_ms=2000, timeout_ms=5000, system_prompt="Be brief.")
    base.update(kw)
    return LlmSettings(**base)


def engine(srv: Server, **kw: Any) -> LlmEngine:
    e = LlmEngine(settings(f"http://127.0.0.1:{srv.server_address[1]}/v1", **kw),
                  CallContext("call-1"))
    e.open()
    return e


def test_tokens_become_sentences_and_history(server: Server, logs: io.StringIO) -> None:
    def script(h: Handler) -> None:
        h.start_stream()
        for tok in ["Sure", ", your bill", " is 3.50 dollars", ". Anything", " else?", " Bye"]:
            h.sse(content(tok))
        h.end_stream()
    server.script = script
    e = engine(server)
    p = e.propose(Speech("how much is my bill"))
    parts = list(p.parts())
    assert parts == [Prompt("Sure, your bill is 3.50 dollars.", static=False),
                     Prompt("Anything else?", static=False), Prompt("Bye", static=False)]
    p.commit()
    headers, body, path = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == f"Bearer {KEY}"
    assert body["stream"] is True and body["model"] == "test-model"
    assert [m["role"] for m in body["messages"]] == ["system", "assistant", "user"]
    assert {t["function"]["name"] for t in body["tools"]} == {"transfer", "hangup",
                                                              "collect_digits"}
    state = json.loads(json.dumps(e.state()))
    assert state["history"][-1] == {"role": "assistant", "content":
                                    "Sure, your bill is 3.50 dollars. Anything else? Bye"}
    assert KEY not in logs.getvalue()


def test_tool_calls_become_actions(server: Server) -> None:
    def script(h: Handler) -> None:
        h.start_stream()
        h.sse(content("Transferring you now."))
        h.sse(tool(0, "trans"))
        h.sse(tool(0, "fer", '{"destin'))
        h.sse(tool(0, "", 'ation": "queue:billing"}'))
        h.end_stream()
    server.script = script
    e = engine(server)
    reply = e.respond(Speech("billing"))
    assert reply.sentences == ["Transferring you now."]
    assert reply.actions == (Transfer("queue:billing"),) and reply.done and e.listen is None
    hist = e.state()["history"]
    assert hist[-2]["tool_calls"][0]["function"]["name"] == "transfer"
    assert hist[-1] == {"role": "tool", "tool_call_id": "call_0", "content": "done"}
    # After the end the engine proposes nothing and sends nothing.
    assert e.respond(Speech("hello?")).parts() == [] and len(server.requests) == 1


def test_collect_digits_then_dtmf_turn(server: Server) -> None:
    replies = iter([
        [content("Please key in your PIN."), tool(0, "collect_digits", '{"max_digits": 4}')],
        [content("Thanks, goodbye."), tool(0, "hangup", "{}")],
    ])

    def script(h: Handler) -> None:
        h.start_stream()
        for obj in next(replies):
            h.sse(obj)
        h.end_stream()
    server.script = script
    e = engine(server)
    r = e.respond(Speech("check my voicemail"))
    assert r.actions == (CollectDigits(1, 4),)
    assert e.listen is not None and e.listen.max_digits == 4
    r = e.respond(Dtmf("1234"))
    assert r.actions == (Hangup("NORMAL_CLEARING"),) and e.listen is None
    assert "1234" in server.requests[1][1]["messages"][-1]["content"]


@pytest.mark.parametrize("case", ["http500", "garbage", "unknown_tool", "bad_args", "empty",
                                  "error_chunk", "cut"])
def test_bad_endpoint_gives_fallback(server: Server, logs: io.StringIO, case: str) -> None:
    def script(h: Handler) -> None:
        if case == "http500":
            body = b'{"error": {"message": "model exploded"}}'
            h.send_response(500)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        h.start_stream()
        if case == "garbage":
            h.chunk(b"data: {this is not json\n\n")
        elif case == "unknown_tool":
            h.sse(tool(0, "launch_rockets", "{}"))
        elif case == "bad_args":
            h.sse(tool(0, "transfer", '{"destination": "drop table; --"}'))
        elif case == "error_chunk":
            h.sse({"error": {"message": "context length exceeded"}})
        elif case == "cut":
            h.sse(content("Half a sen"))
            h.wfile.write(b"5\r\nda")          # the connection dies inside a chunk
            h.wfile.flush()
            h.close_connection = True
            return
        h.end_stream()
    server.script = script
    e = engine(server)
    reply = e.respond(Speech("hello"))
    assert reply.sentences[-2:] == [FALLBACK_SORRY, FALLBACK_REPEAT]
    assert not reply.done and e.listen is not None
    line = [json.loads(x) for x in logs.getvalue().splitlines() if "llm_turn_failed" in x]
    assert line and line[0]["level"] == "error" and line[0]["call_uuid"] == "call-1"
    expected = {"http500": "HTTP 500", "garbage": "not JSON", "unknown_tool": "unknown tool",
                "bad_args": "bad destination", "empty": "empty reply",
                "error_chunk": "context length", "cut": "bad HTTP from endpoint"}[case]
    assert expected in line[0]["error"]
    assert KEY not in logs.getvalue()


def test_fallback_transfers_when_configured(server: Server) -> None:
    server.script = lambda h: h.send_error(503)
    e = engine(server, fallback_transfer="7000")
    reply = e.respond(Speech("hello"))
    assert reply.actions == (Transfer("7000"),) and reply.done


def test_endpoint_down(logs: io.StringIO) -> None:
    port = free_port()
    e = LlmEngine(settings(f"http://127.0.0.1:{port}"), CallContext("call-2"))
    reply = e.respond(Speech("hello"))
    assert reply.sentences == [FALLBACK_SORRY, FALLBACK_REPEAT]
    assert "cannot connect" in logs.getvalue()


def test_slow_first_sentence_gets_filler(server: Server) -> None:
    def script(h: Handler) -> None:
        h.start_stream()
        h.sse(content("Let me"))              # no sentence yet
        time.sleep(0.6)                        # past deadline_ms=300, within stall_ms
        h.sse(content(" check. Done."))
        h.end_stream()
    server.script = script
    e = engine(server)
    parts = list(e.propose(Speech("status?")).parts())
    assert parts[0] == Prompt("One moment.", filler=True)
    assert [p.text for p in parts[1:] if isinstance(p, Prompt)] == ["Let me check.", "Done."]


def test_stalled_stream_gives_fallback(server: Server, logs: io.StringIO) -> None:
    release = threading.Event()

    def script(h: Handler) -> None:
        h.start_stream()
        h.sse(content("Hmm"))
        release.wait(10)
    server.script = script
    e = engine(server, deadline_ms=100, stall_ms=400)
    parts = list(e.propose(Speech("status?")).parts())
    release.set()
    assert parts[0].filler is True  # type: ignore[union-attr]
    assert [p.text for p in parts[1:] if isinstance(p, Prompt)] == [FALLBACK_SORRY,
                                                                     FALLBACK_REPEAT]
    assert "stalled" in logs.getvalue()


def test_speculative_proposals(server: Server) -> None:
    def script(h: Handler) -> None:
        h.start_stream()
        h.sse(content("Okay."))
        h.end_stream()
    server.script = script
    e = engine(server)
    spec = e.propose(Speech("what are your", final=False))   # nothing sent yet
    assert server.requests == []
    spec.cancel()
    final = e.propose(Speech("what are your hours"))
    assert final.reply().sentences == ["Okay."]
    final.commit()
    with pytest.raises(StaleProposal):
        spec.commit()
    assert [m["content"] for m in e.state()["history"]][-2:] == ["what are your hours", "Okay."]


def test_restore_and_history_bound(server: Server) -> None:
    def script(h: Handler) -> None:
        h.start_stream()
        h.sse(content("Yes."))
        h.end_stream()
    server.script = script
    e = engine(server, max_history=4)
    for i in range(4):
        e.respond(Speech(f"question {i}"))
    hist = e.state()["history"]
    assert len(hist) <= 4 and hist[0]["role"] == "user"
    other = LlmEngine(e.settings, CallContext("call-1"))
    other.restore(json.loads(json.dumps(e.state())))
    other.respond(Speech("again"))
    sent = server.requests[-1][1]["messages"]
    assert sent[1:-1] == hist and sent[-1] == {"role": "user", "content": "again"}


def test_sentence_splitter() -> None:
    s = SentenceSplitter()
    out = []
    for tok in ["Dr. Smith", " is in. It costs 3", ".5 dollars!", " Really?", "\nYes"]:
        out += s.feed(tok)
    assert out == ["Dr. Smith is in.", "It costs 3.5 dollars!", "Really?"]
    assert s.flush() == "Yes" and s.flush() is None


def test_chat_url_and_tool_action_errors() -> None:
    assert chat_url("http://h:8080") == ("http", "h", 8080, "/v1/chat/completions")
    assert chat_url("https://h/v1/")[3] == "/v1/chat/completions"
    assert chat_url("http://h/api/v1/chat/completions")[3] == "/api/v1/chat/completions"
    with pytest.raises(LlmError):
        chat_url("ftp://h")
    assert tool_action("transfer", "{}", "7000") == Transfer("7000")
    for name, args in [("transfer", "{}"), ("collect_digits", '{"max_digits": 0}'),
                       ("hangup", "[1]"), ("rm", "{}"), ("hangup", "{oops")]:
        with pytest.raises(LlmError):
            tool_action(name, args)


def test_barge_in_commits_what_was_said(server: Server) -> None:
    def script(h: Handler) -> None:
        h.start_stream()
        h.sse(content("First sentence. Second"))
        time.sleep(0.3)
        h.sse(content(" sentence. Third."))
        h.end_stream()
    server.script = script
    e = engine(server)
    p = e.propose(Speech("tell me a story"))
    parts = p.parts()
    assert next(parts) == Prompt("First sentence.", static=False)
    p.commit()                                     # the caller interrupted here
    assert e.state()["history"][-1] == {"role": "assistant", "content": "First sentence."}
    assert e.listen is not None
