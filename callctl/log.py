"""structlog setup: JSON lines to stdout (journald), console renderer on a TTY.

Contract:
- ``setup(cfg)`` is called once by the entry point; library code only calls ``get_logger()``.
- Bind ``call_uuid`` with ``get_logger().bind(call_uuid=...)`` in call context.
- Values of keys that look secret (password, token, api_key, authorization, secret) are always
  replaced by ``***``; URLs with credentials are masked.
- Caller numbers (keys in ``CALLER_KEYS``) are masked to their last 4 digits unless the log
  level is debug or ``log.mask_caller`` is false.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from callctl.config import LogConfig, mask_url

SECRET_KEYS = frozenset({"password", "token", "api_key", "authorization", "secret", "llm_api_key"})
CALLER_KEYS = frozenset({"caller", "caller_number", "caller_id_number", "ani", "from_number"})

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def mask_number(number: str) -> str:
    """``+15551234567`` → ``*******4567``; short or empty values become ``***``."""
    if len(number) <= 4:
        return "***" if number else number
    return "*" * (len(number) - 4) + number[-4:]


class _Masker:
    def __init__(self, mask_caller: bool) -> None:
        self.mask_caller = mask_caller

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            low = key.lower()
            if low in SECRET_KEYS or low.endswith(("_password", "_token", "_secret")):
                if value:
                    event[key] = "***"
            elif low in CALLER_KEYS and self.mask_caller and isinstance(value, str):
                event[key] = mask_number(value)
            elif isinstance(value, str) and "://" in value and "@" in value:
                event[key] = mask_url(value)
        return event


def setup(cfg: LogConfig | None = None, stream: Any = None) -> None:
    """Configure structlog for the whole process (idempotent)."""
    cfg = cfg or LogConfig()
    stream = stream or sys.stdout
    level = _LEVELS[cfg.level]
    fmt = cfg.format
    if fmt == "auto":
        fmt = "console" if hasattr(stream, "isatty") and stream.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _Masker(cfg.mask_caller and level > logging.DEBUG),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through stdlib logging (greenswitch) go to stderr at warning level.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def get_logger(**bind: Any) -> Any:
    """A structlog logger with ``bind`` values attached. Lazy: a logger made at import time
    still follows the configuration ``setup()`` installs later."""
    return structlog.get_logger("callctl", **bind)
