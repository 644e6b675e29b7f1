"""Webhooks over real loopback HTTP: the payload arrives, failures are one warning line."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conversation_rig import HttpRecorder
from gevent.threadpool import ThreadPool

from callctl.dialog.base import Webhook
from callctl.dialog.webhook import post_webhook


class Lines:
    """Where post_webhook logs (a structlog-like sink that keeps the lines)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append(("info", event, kw))

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))


@pytest.fixture
def pool() -> ThreadPool:
    return ThreadPool(2)


def test_the_payload_is_posted_with_the_call_uuid(pool: ThreadPool) -> None:
    server = HttpRecorder()
    try:
        log = Lines()
        post_webhook(Webhook(server.url, {"department": "billing"}), "u-1", log, pool)
        assert [json.loads(b) for b in server.bodies] == [
            {"call_uuid": "u-1", "department": "billing"}]
        assert log.lines == [("info", "conversation.webhook", {"status": 200})]
    finally:
        server.close()


def test_a_refused_webhook_is_one_warning_and_no_traceback(
        pool: ThreadPool, capfd: pytest.CaptureFixture[str]) -> None:
    log = Lines()
    post_webhook(Webhook("http://127.0.0.1:9/hook"), "u-1", log, pool)  # discard port: closed
    assert [(lvl, ev) for lvl, ev, _ in log.lines] == [("warning", "conversation.webhook_failed")]
    assert "Connection refused" in log.lines[0][2]["error"]
    pool.join()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "failed with" not in out + err


def test_a_slow_webhook_is_given_up_at_its_deadline(pool: ThreadPool) -> None:
    server = HttpRecorder(delay_s=3.0)
    try:
        log = Lines()
        t0 = time.monotonic()
        post_webhook(Webhook(server.url, deadline_ms=300), "u-1", log, pool)
        assert time.monotonic() - t0 < 1.5
        assert [ev for _, ev, _ in log.lines] == ["conversation.webhook_failed"]
    finally:
        server.close()
