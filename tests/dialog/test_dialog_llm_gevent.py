"""The LLM client is cooperative under gevent's monkey-patching (as in the daemon): while a
turn waits for a slow endpoint, other greenlets (other calls) keep running."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import gevent

    from callctl.dialog.base import CallContext, Speech
    from callctl.dialog.llm import LlmEngine, LlmSettings

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(0.5)                       # a slow model (cooperative: patched)
            body = b'data: {"choices": [{"delta": {"content": "Done."}}]}\\n\\ndata: [DONE]\\n\\n'
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ticks = [0]

    def tick():
        while True:
            ticks[0] += 1
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    url = "http://127.0.0.1:%d" % server.server_address[1]
    engine = LlmEngine(LlmSettings(url=url, deadline_ms=100, stall_ms=3000), CallContext("c"))
    parts = [p.text for p in engine.propose(Speech("hi")).parts()]
    ticker.kill()
    print(json.dumps({"ticks": ticks[0], "parts": parts}))
""")


def test_llm_turn_does_not_block_the_hub() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["parts"] == ["One moment.", "Done."]
    assert result["ticks"] >= 10          # ~50 expected; a blocked hub would give 0-1
