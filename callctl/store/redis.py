"""The Redis session store (redis-py): writes through the writer greenlet, reads direct.

Connection (``StoreConfig``):

- ``redis_url``: ``redis://[user]:password@host:port/db`` or ``rediss://…`` for TLS
  (certificate and host name verified against ``tls_ca_file`` or the system store).
- With ``sentinel_master`` set, the URL names the Sentinels instead, comma-separated:
  ``redis://:password@sentinel1:26379,sentinel2:26379/0``; the password (and TLS) are used for
  the master; the Sentinels themselves are asked without authentication.
- ``timeout_s`` bounds connect and every socket read/write; redis-py's own retries are off
  (the writer retries, readers get ``StoreUnavailable`` at once).

The password never reaches a log line, an exception text or ``repr()``: the URL is shown
through ``config.mask_url`` and error texts pass through ``_safe``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import unquote

import redis
import redis.connection
import redis.exceptions
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from callctl.config import StoreConfig, mask_url
from callctl.metrics import Metrics
from callctl.store.base import Op, SessionStore, StoreUnavailable, StoreUrlError
from callctl.store.writer import Entry, StoreWriter

T = TypeVar("T")

# KEYS[1] = lease key, ARGV[1] = node id
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# KEYS[1] = lease key, ARGV[1] = node id, ARGV[2] = ttl ms. 1: renewed/re-taken, 0: lost.
_RENEW = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ReadOnlyError, redis.sentinel.MasterNotFoundError,
                redis.exceptions.BusyLoadingError, OSError)


@dataclass(frozen=True)
class SentinelTarget:
    """What a Sentinel URL says: the Sentinels' addresses and how to talk to the master."""

    sentinels: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int
    ssl: bool


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis://:pw@h1:26379,h2:26379/0`` → SentinelTarget. StoreUrlError (password-free text)
    if the URL is not of that form."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise StoreUrlError(f"sentinel URL {mask_url(url)!r}: must start with redis:// or rediss://")
    creds, at, hostpart = rest.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    hosts, _, path = hostpart.partition("/")
    path = path.split("?", 1)[0]
    try:
        db = int(path) if path else 0
    except ValueError:
        raise StoreUrlError(f"sentinel URL {mask_url(url)!r}: database {path!r} is not a number")
    sentinels = []
    for h in hosts.split(","):
        host, _, port = h.strip().rpartition(":")
        if not host:
            host, port = h.strip(), "26379"
        if not host or not port.isdigit():
            raise StoreUrlError(f"sentinel URL {mask_url(url)!r}: bad sentinel address {h!r}")
        sentinels.append((host.strip("[]"), int(port)))
    return SentinelTarget(tuple(sentinels), username, password, db, scheme == "rediss")


def _password_of(cfg: StoreConfig) -> str | None:
    if cfg.sentinel_master:
        return parse_sentinel_url(cfg.redis_url).password
    try:
        return redis.connection.parse_url(cfg.redis_url).get("password")
    except ValueError:
        return None


def connect(cfg: StoreConfig) -> redis.Redis:
    """A redis-py client for ``cfg`` (no I/O yet). StoreUrlError (a ValueError) for a
    malformed URL."""
    common: dict[str, Any] = {
        "socket_timeout": cfg.timeout_s, "socket_connect_timeout": cfg.timeout_s,
        "retry": Retry(NoBackoff(), 0), "decode_responses": True,
        "health_check_interval": 0,
    }
    if not cfg.redis_url:
        raise StoreUrlError("store.redis_url is empty")
    if cfg.tls_ca_file and cfg.redis_url.startswith("rediss://") and not cfg.sentinel_master:
        common["ssl_ca_certs"] = cfg.tls_ca_file
    if cfg.sentinel_master:
        t = parse_sentinel_url(cfg.redis_url)
        sentinel = redis.sentinel.Sentinel(
            list(t.sentinels),
            sentinel_kwargs={"socket_timeout": cfg.timeout_s,
                             "socket_connect_timeout": cfg.timeout_s, "ssl": t.ssl,
                             **({"ssl_ca_certs": cfg.tls_ca_file} if t.ssl and cfg.tls_ca_file
                                else {})},
            **common)
        tls: dict[str, Any] = ({"ssl_ca_certs": cfg.tls_ca_file} if t.ssl and cfg.tls_ca_file
                               else {})
        return sentinel.master_for(cfg.sentinel_master, username=t.username,
                                   password=t.password, db=t.db, ssl=t.ssl, **tls)
    try:
        return redis.Redis.from_url(cfg.redis_url, **common)
    except ValueError as e:
        raise StoreUrlError(f"store.redis_url {mask_url(cfg.redis_url)!r}: "
                         f"{str(e).replace(cfg.redis_url, '***')}") from None


class RedisStore(SessionStore):
    """The session store on Redis. ``start()`` before use; ``close()`` at shutdown."""

    backend = "redis"

    def __init__(self, cfg: StoreConfig, metrics: Metrics | None = None, *,
                 retry_min_s: float = 0.05, ping_interval_s: float = 2.0,
                 batch_max: int = 256) -> None:
        super().__init__(cfg)
        self._password = _password_of(cfg)
        self.url = mask_url(cfg.redis_url)
        self.log = self.log.bind(url=self.url, sentinel_master=cfg.sentinel_master or None)
        self._client = connect(cfg)
        self._release = self._client.register_script(_RELEASE)
        self._renew = self._client.register_script(_RENEW)
        self.writer = StoreWriter(
            self._apply, self._ping, queue_size=cfg.queue_size, metrics=metrics,
            batch_max=batch_max, retry_min_s=retry_min_s, retry_max_s=cfg.retry_max_s,
            ping_interval_s=ping_interval_s, on_recover=self._on_recover, log=self.log)

    def __repr__(self) -> str:
        return (f"RedisStore(url={self.url!r}, sentinel_master={self.cfg.sentinel_master!r}, "
                f"namespace={self.cfg.namespace!r}, status={self.status!r})")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.log.info("store_started", namespace=self.cfg.namespace,
                      queue_size=self.cfg.queue_size)
        self.writer.start()

    def flush(self, timeout: float = 2.0) -> bool:
        return self.writer.flush(timeout)

    def close(self, timeout: float = 2.0) -> bool:
        ok = self.writer.stop(timeout)
        self._client.close()
        return ok

    @property
    def healthy(self) -> bool:
        return self.writer.healthy

    # -- writes -------------------------------------------------------------------------

    def _submit(self, ops: tuple[Op, ...]) -> None:
        self.writer.submit(ops)

    def _on_recover(self, since: float) -> None:
        for entry in self._resync_ops(since):
            self.writer.submit(entry)

    def _apply(self, batch: Sequence[Entry]) -> list[str | None]:
        pipe = self._client.pipeline(transaction=True)
        sizes = []
        for entry in batch:
            for op in entry:
                _queue_op(pipe, op)
            sizes.append(len(entry))
        try:
            results = pipe.execute(raise_on_error=False)
        except _UNAVAILABLE as e:
            raise StoreUnavailable(self._safe(e)) from None
        except redis.exceptions.ResponseError as e:  # EXECABORT: the batch was refused whole
            if "READONLY" in str(e) or "LOADING" in str(e):
                raise StoreUnavailable(self._safe(e)) from None
            return [self._safe(e)] * len(batch)
        finally:
            pipe.reset()
        out: list[str | None] = []
        i = 0
        for n in sizes:
            errors = [r for r in results[i:i + n] if isinstance(r, Exception)]
            i += n
            out.append(self._safe(errors[0]) if errors else None)
        return out

    def _ping(self) -> None:
        self._call(self._client.ping)

    # -- reads --------------------------------------------------------------------------

    def _read_hash(self, key: str) -> dict[str, str]:
        # decode_responses=True: every reply is str (redis-py's own types say bytes | str)
        return dict(self._call(lambda: cast("dict[str, str]", self._client.hgetall(key))))

    def _read_hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        def run() -> list[dict[str, str]]:
            pipe = self._client.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            return [dict(d) for d in pipe.execute()]
        return self._call(run) if keys else []

    def _read_list(self, key: str) -> list[str]:
        return list(self._call(lambda: cast("list[str]", self._client.lrange(key, 0, -1))))

    def _read_set(self, key: str) -> set[str]:
        return set(self._call(lambda: cast("set[str]", self._client.smembers(key))))

    def _read_nodes(self) -> dict[str, str]:
        def run() -> dict[str, str]:
            keys = sorted(self._client.scan_iter(match=self.keys.node_pattern, count=500))
            values = cast("list[str | None]", self._client.mget(keys)) if keys else []
            return {self.keys.node_id_of(k): v for k, v in zip(keys, values, strict=True)
                    if v is not None}
        return self._call(run)

    def _read_stream(self, key: str, since_id: str, count: int
                     ) -> list[tuple[str, dict[str, str]]]:
        # RESP2 reply: [[key, [(id, {field: value}), ...]]]
        reply = cast("list[tuple[str, list[tuple[str, dict[str, str]]]]]",
                     self._call(lambda: self._client.xread({key: since_id}, count=count)))
        if not reply:
            return []
        return [(eid, dict(data)) for eid, data in reply[0][1]]

    # -- ownership lease ----------------------------------------------------------------

    def claim(self, uuid: str, node_id: str, ttl_s: float) -> bool:
        key = self.keys.owner(uuid)
        return bool(self._call(lambda: self._client.set(key, node_id, nx=True, px=_ms(ttl_s))))

    def renew(self, uuid: str, node_id: str, ttl_s: float) -> bool:
        key = self.keys.owner(uuid)
        return bool(self._call(lambda: self._renew(keys=[key], args=[node_id, _ms(ttl_s)])))

    def renew_many(self, uuids: Sequence[str], node_id: str, ttl_s: float) -> list[bool]:
        def run() -> list[bool]:
            pipe = self._client.pipeline(transaction=False)
            for uuid in uuids:
                self._renew(keys=[self.keys.owner(uuid)], args=[node_id, _ms(ttl_s)],
                            client=pipe)
            return [bool(r) for r in pipe.execute()]
        return self._call(run) if uuids else []

    def release(self, uuid: str, node_id: str) -> bool:
        key = self.keys.owner(uuid)
        return bool(self._call(lambda: self._release(keys=[key], args=[node_id])))

    def owner(self, uuid: str) -> str | None:
        value = self._call(lambda: self._client.get(self.keys.owner(uuid)))
        return None if value is None else str(value)

    # -- helpers ------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except _UNAVAILABLE as e:
            raise StoreUnavailable(self._safe(e)) from None
        except redis.exceptions.RedisError as e:
            raise StoreUnavailable(self._safe(e)) from None

    def _safe(self, err: BaseException) -> str:
        """``type: message`` with the password (if any) masked."""
        text = f"{type(err).__name__}: {err}"
        if self._password:
            text = text.replace(self._password, "***")
        return text


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _queue_op(pipe: Any, op: Op) -> None:
    a = op.args
    if op.cmd == "hset":
        pipe.hset(op.key, mapping=a[0])
    elif op.cmd == "rpush":
        pipe.rpush(op.key, a[0])
    elif op.cmd == "ltrim":
        pipe.ltrim(op.key, a[0], a[1])
    elif op.cmd == "delete":
        pipe.delete(op.key)
    elif op.cmd == "expire":
        pipe.expire(op.key, a[0])
    elif op.cmd == "sadd":
        pipe.sadd(op.key, a[0])
    elif op.cmd == "srem":
        pipe.srem(op.key, a[0])
    elif op.cmd == "set_px":
        pipe.set(op.key, a[0], px=a[1])
    elif op.cmd == "xadd":
        pipe.xadd(op.key, a[0], maxlen=a[1], approximate=True)
    else:
        raise ValueError(f"unknown store op {op.cmd!r}")
