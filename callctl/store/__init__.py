"""Session state: calls, turns, events, node heartbeats and call ownership (Redis or memory).

Use ``open_store(cfg.store, metrics)``; see ``callctl.store.base`` for the contracts and
``callctl.store.keys`` for the key layout.
"""

from __future__ import annotations

from callctl.config import StoreConfig
from callctl.metrics import Metrics
from callctl.store.base import (
    EVENT_KINDS,
    CallRecord,
    NodeInfo,
    SessionStore,
    StoreDataError,
    StoreError,
    StoreEvent,
    StoreUnavailable,
    TurnRecord,
    redact,
)
from callctl.store.keys import Keys
from callctl.store.reconciliation import (
    LOST_CAUSE,
    ChannelListError,
    FsChannel,
    ReconcilePlan,
    Resume,
    Skip,
    parse_channels,
    plan_reconciliation,
    reconcile,
)


def open_store(cfg: StoreConfig, metrics: Metrics | None = None) -> SessionStore:
    """A started-ready store: ``RedisStore`` if ``cfg.redis_url`` is set, else ``MemoryStore``
    (demo only; it logs that once on ``start()``). Call ``start()`` then, at exit, ``close()``.
    StoreUrlError (a ValueError, password-free) for a malformed URL."""
    if cfg.redis_url:
        from callctl.store.redis import RedisStore

        return RedisStore(cfg, metrics)
    from callctl.store.memory import MemoryStore

    return MemoryStore(cfg)


__all__ = [
    "EVENT_KINDS",
    "LOST_CAUSE",
    "CallRecord",
    "ChannelListError",
    "FsChannel",
    "Keys",
    "NodeInfo",
    "ReconcilePlan",
    "Resume",
    "SessionStore",
    "Skip",
    "StoreDataError",
    "StoreError",
    "StoreEvent",
    "StoreUnavailable",
    "TurnRecord",
    "open_store",
    "parse_channels",
    "plan_reconciliation",
    "reconcile",
    "redact",
]
