"""Webhooks a dialog asks for (``callctl.dialog.base.Webhook``): fire-and-forget JSON POSTs.

Contract: ``post_webhook`` never raises and gives up after the webhook's deadline; it runs on
its own greenlet (the conversation spawns it) and does the HTTP exchange in a dedicated
threadpool of ``WEBHOOK_THREADS`` threads (``Voice.webhooks``), never in the hub's threadpool
that ASR and TTS need.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import gevent
from gevent.threadpool import ThreadPool

from callctl.dialog.base import Webhook

WEBHOOK_THREADS = 4   # webhooks' own threads: a slow server never starves ASR/TTS


def post_webhook(hook: Webhook, call_uuid: str, log: Any, pool: ThreadPool) -> None:
    """POST the webhook's payload as JSON; give up after its deadline. Never raises. The HTTP
    exchange runs in ``pool`` (the webhooks' own threads, not the hub's threadpool that ASR
    and TTS need), so a slow or dead server costs this greenlet only (whether or not the
    process is monkey-patched)."""
    body = json.dumps({"call_uuid": call_uuid, **hook.payload}).encode()
    req = urllib.request.Request(hook.url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    deadline = hook.deadline_ms / 1000

    def post() -> int | Exception:
        # the failure comes back as a value: raised in a pool thread, gevent would also
        # print its traceback to stderr on top of our one-line warning
        try:
            with urllib.request.urlopen(req, timeout=deadline) as resp:
                resp.read(4096)
                return int(resp.status)
        except Exception as e:
            return e

    try:
        result = pool.spawn(post).get(timeout=deadline)
    except (Exception, gevent.Timeout) as e:
        result = e
    if isinstance(result, BaseException):
        log.warning("conversation.webhook_failed", error=repr(result)[:200])
    else:
        log.info("conversation.webhook", status=result)
