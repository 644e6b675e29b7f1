"""In-process session store for ``callctl demo`` when no ``store.redis_url`` is configured.

Same interface and key layout as ``RedisStore`` (it interprets the same ``Op`` s on plain
dicts with expiry), so the demo behaves like production, but nothing is shared between
processes and everything is lost at exit; ``start()`` says so in the log once. Writes are
applied at once (no I/O, nothing to queue); the store is always healthy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from callctl.config import StoreConfig
from callctl.store.base import Op, SessionStore


class MemoryStore(SessionStore):
    """Dict-backed store; one process only. Expiry is checked lazily on access."""

    backend = "memory"

    def __init__(self, cfg: StoreConfig, clock: Any = time.monotonic) -> None:
        super().__init__(cfg)
        self._clock = clock
        self._data: dict[str, Any] = {}
        self._expires: dict[str, float] = {}
        self._stream: list[tuple[str, dict[str, str]]] = []
        self._last_ms = 0
        self._seq_n = 0
        self._started = False

    def __repr__(self) -> str:
        return f"MemoryStore(namespace={self.cfg.namespace!r}, keys={len(self._data)})"

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.log.warning("store_in_memory",
                             note="no store.redis_url configured: call state is kept in this "
                                  "process only, not shared with NOC tools, lost at exit")

    # -- primitives -----------------------------------------------------------------------

    def _get(self, key: str) -> Any:
        exp = self._expires.get(key)
        if exp is not None and exp <= self._clock():
            self._data.pop(key, None)
            self._expires.pop(key, None)
        return self._data.get(key)

    def _submit(self, ops: tuple[Op, ...]) -> None:
        for op in ops:
            self._apply(op)

    def _apply(self, op: Op) -> None:
        k, a = op.key, op.args
        cur = self._get(k)
        if op.cmd == "hset":
            self._data[k] = {**(cur or {}), **a[0]}
        elif op.cmd == "rpush":
            self._data[k] = [*(cur or []), a[0]]
        elif op.cmd == "ltrim":
            if cur is not None:
                stop = None if a[1] == -1 else a[1] + 1
                self._data[k] = cur[a[0]:stop]
        elif op.cmd == "delete":
            self._data.pop(k, None)
            self._expires.pop(k, None)
        elif op.cmd == "expire":
            if cur is not None:
                self._expires[k] = self._clock() + a[0]
        elif op.cmd == "sadd":
            self._data[k] = {*(cur or set()), a[0]}
        elif op.cmd == "srem":
            if cur is not None:
                self._data[k] = cur - {a[0]}
        elif op.cmd == "set_px":
            self._data[k] = a[0]
            self._expires[k] = self._clock() + a[1] / 1000
        elif op.cmd == "xadd":
            ms = max(int(time.time() * 1000), self._last_ms)
            self._seq_n = self._seq_n + 1 if ms == self._last_ms else 0
            self._last_ms = ms
            eid = f"{ms}-{self._seq_n}"
            self._stream.append((eid, dict(a[0])))
            del self._stream[:-a[1]]
        else:
            raise ValueError(f"unknown store op {op.cmd!r}")

    def _read_hash(self, key: str) -> dict[str, str]:
        return dict(self._get(key) or {})

    def _read_hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        return [self._read_hash(k) for k in keys]

    def _read_list(self, key: str) -> list[str]:
        return list(self._get(key) or [])

    def _read_set(self, key: str) -> set[str]:
        return set(self._get(key) or set())

    def _read_nodes(self) -> dict[str, str]:
        prefix = self.keys.node_pattern[:-1]
        return {self.keys.node_id_of(k): v for k in list(self._data)
                if k.startswith(prefix) and (v := self._get(k)) is not None}

    def _read_stream(self, key: str, since_id: str, count: int
                     ) -> list[tuple[str, dict[str, str]]]:
        after = _id_tuple(since_id)
        return [(eid, dict(d)) for eid, d in self._stream if _id_tuple(eid) > after][:count]

    # -- ownership lease --------------------------------------------------------------------

    def claim(self, uuid: str, node_id: str, ttl_s: float) -> bool:
        key = self.keys.owner(uuid)
        if self._get(key) is not None:
            return False
        self._apply(Op("set_px", key, (node_id, max(1, round(ttl_s * 1000)))))
        return True

    def renew(self, uuid: str, node_id: str, ttl_s: float) -> bool:
        cur = self._get(self.keys.owner(uuid))
        if cur not in (None, node_id):
            return False
        self._apply(Op("set_px", self.keys.owner(uuid), (node_id, max(1, round(ttl_s * 1000)))))
        return True

    def release(self, uuid: str, node_id: str) -> bool:
        key = self.keys.owner(uuid)
        if self._get(key) != node_id:
            return False
        self._apply(Op("delete", key))
        return True

    def owner(self, uuid: str) -> str | None:
        value = self._get(self.keys.owner(uuid))
        return None if value is None else str(value)


def _id_tuple(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
