"""One LLM-routed call through the emulator, in a monkey-patched process as in the daemon
(``callctl/__main__.py`` patches; the LLM client's stdlib socket is cooperative only then).

Run by tests/test_conversation_llm.py: ``python conversation_llm_run.py SCENARIO REDIS_URL
TMPDIR``; prints one JSON object (what the caller heard, what was said, server timings).
Scenarios: ``stream`` (two sentences 2 s apart, then a hangup tool call), ``transfer`` (a
``transfer`` tool call after a filler-worthy delay), ``down`` (nothing listens at the
endpoint), ``speech`` (the caller speaks; the speculative request is reused for the committed
turn), ``cut`` (a key pressed over a reply that is still streaming)."""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conversation_rig import Rig  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from testkit import free_port  # noqa: E402

from callctl import config  # noqa: E402
from callctl.metrics import Metrics  # noqa: E402
from callctl.sim import callers  # noqa: E402


def content(text: str) -> bytes:
    obj = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def tool(name: str, args: dict[str, Any]) -> bytes:
    call = {"index": 0, "id": "call_0", "function": {"name": name, "arguments": json.dumps(args)}}
    obj = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class Llm(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, scenario: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.scenario = scenario
        self.requests: list[dict[str, Any]] = []
        self.first_sent: list[float] = []
        self.done_at: list[float] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Llm

    def log_message(self, *args: Any) -> None:
        pass

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self) -> None:  # http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        srv.requests.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        n = len(srv.requests)
        if srv.scenario == "stream" and n == 1:
            self.chunk(content("Sure, let me look that up for you."))
            self.chunk(content(" Your"))                   # tokens start with the blank
            srv.first_sent.append(time.monotonic())
            time.sleep(2.0)                                # the model thinks on
            self.chunk(content(" balance is ten dollars."))
        elif srv.scenario == "transfer" and n == 1:
            time.sleep(2.0)                                # slow: past llm_deadline_ms
            self.chunk(content("Let me put you through to billing."))
            self.chunk(tool("transfer", {"destination": "7005"}))
        elif srv.scenario == "cut" and n == 1:
            self.chunk(content("We have many wonderful offers for you today, and I would like"
                               " to tell you about every single one of them."))
            self.chunk(content(" First"))
            time.sleep(4.0)                                # cut off while it streams
            try:
                self.chunk(content(", the gold plan."))
                self.chunk(b"data: [DONE]\n\n")
                self.chunk(b"")
            except OSError:
                pass
            return
        elif srv.scenario == "speech":
            self.chunk(content("Your balance is ten dollars. Goodbye."))
            self.chunk(tool("hangup", {}))
        else:
            self.chunk(content("Goodbye."))
            self.chunk(tool("hangup", {}))
        self.chunk(b"data: [DONE]\n\n")
        srv.done_at.append(time.monotonic())
        self.chunk(b"")


def main() -> int:
    scenario, redis_url, tmp = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    llm = Llm(scenario)
    threading.Thread(target=llm.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    url = f"http://127.0.0.1:{free_port() if scenario == 'down' else llm.server_address[1]}"
    if scenario == "speech":
        from callctl.asr.whisper import WhisperEngine
        asr: Any = WhisperEngine(Metrics(CollectorRegistry()))
    else:
        from callctl.asr.vosk import VoskEngine
        asr = VoskEngine(Metrics(CollectorRegistry()), pool_size=1)
    (tmp / "flows").mkdir(exist_ok=True)
    rig = Rig(tmp, redis_url, asr, flow="llm",
              dialog=config.DialogConfig(flows_dir=str(tmp / "flows"), llm_url=url,
                                         llm_deadline_ms=1500, llm_stall_ms=4000,
                                         llm_fallback_transfer="7000"),
              turns=config.TurnsConfig(no_input_ms=5000 if scenario == "speech" else 700))
    steps: list[Any] = [callers.wait_for_bot(silence_s=0.3)]
    if scenario == "speech":
        steps += [callers.say("What is my balance?", voice="piper")]
    if scenario == "cut":                                # a key over the streamed reply
        steps += [callers.pause(2.2), callers.dtmf("5")]
    steps += [callers.pause(12.0)]
    try:
        call, caller = rig.call(steps)
        cause = rig.finish(call, timeout=25)
        heard = [{"start": h.start, "end": h.end, "interrupted": h.interrupted}
                 for h in call.heard()]
        out = {"cause": cause, "heard": heard, "said": rig.said,
               "transfers": rig.transfers(call.uuid),
               "requests": [r["messages"] for r in llm.requests],
               "first_sent": llm.first_sent, "done_at": llm.done_at,
               "playback_files": [str(p) for p in rig.playback_files()],
               "caller_error": caller.error}
    finally:
        rig.close()
        llm.shutdown()
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
