"""Session store interface: what the daemon writes about calls and what NOC tools read back.

How this works: ``SessionStore`` owns the *meaning* of the keys (which records, which events,
redaction, retention) and turns every write into a tuple of primitive ``Op`` s (``HSET``,
``RPUSH``, ``XADD``…) handed to ``_submit``. A backend supplies ``_submit`` plus a handful of
read primitives and the ownership lease. ``RedisStore`` queues the ops for one writer greenlet
(``writer.StoreWriter``), so writes never wait for Redis; ``MemoryStore`` applies them at once.

Contracts:

- Write methods (``call_started``, ``call_answered``, ``save_call``, ``add_turn``,
  ``call_transferred``, ``call_ended``, ``heartbeat``, ``node_stopped``) do no I/O, never block
  and never raise because Redis is down. Writes are at-least-once: after a lost reply a batch
  may be applied twice (turn lists are de-duplicated by index on read).
- Read methods and the lease methods (``claim``, ``renew``, ``release``, ``owner``,
  ``takeover_if_expired``) talk to Redis synchronously, bounded by ``store.timeout_s``, and raise
  ``StoreUnavailable`` when it does not answer. Keep them off a turn's critical path.
- Records are frozen; change them with ``dataclasses.replace``.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from callctl.config import StoreConfig
from callctl.log import get_logger, mask_number
from callctl.store.keys import MAX_TURNS, Keys

if TYPE_CHECKING:
    from callctl.call.timeline import Turn

#: Kinds of records in the events stream.
EVENT_KINDS = ("call_started", "answered", "turn", "transferred", "ended", "dialog")

#: Call states that mean the call is over (``CallRecord.state``).
ENDED_STATES = frozenset({"ended"})

SCHEMA_VERSION = "1"

#: Ended calls remembered for replay after an outage (oldest forgotten first), and how long
#: they are kept while the store is healthy (their writes are done by then).
RECENTLY_ENDED_MAX = 2000
RECENTLY_ENDED_S = 30.0


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """Redis did not answer (down, timeout, failover). Retry later; calls go on meanwhile."""


class StoreUrlError(StoreError, ValueError):
    """``store.redis_url`` cannot be used (malformed, wrong scheme); the message is one line
    without the password. Not retryable: fix the setting (the daemon exits 1 at start-up)."""


class StoreDataError(StoreError):
    """A stored value is not what callctl writes (foreign or corrupt data). Not retryable."""


@dataclass(frozen=True)
class CallRecord:
    """One call as stored in ``<ns>:call:<uuid>``. Timestamps are Unix epoch seconds."""

    uuid: str
    node: str
    state: str = "ringing"
    caller: str = ""
    did: str = ""
    route: str = ""
    started_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    end_cause: str = ""
    updated_at: float = 0.0
    #: Flow position: the scripted-flow node the call is at (resume continues from here).
    flow_node: str = ""
    #: Dialog's own JSON-able state (slots, counters...).
    dialog_state: Mapping[str, Any] = field(default_factory=dict)
    #: LLM chat history, ``({"role": ..., "content": ...}, ...)``.
    llm_history: tuple[Mapping[str, Any], ...] = ()
    #: Turns taken so far.
    turns: int = 0

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES or self.ended_at is not None

    def to_hash(self) -> dict[str, str]:
        """All fields as strings (None → ``""``, mappings and history as JSON)."""
        out = {"v": SCHEMA_VERSION}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("dialog_state", "llm_history"):
                out[f.name] = json.dumps(
                    dict(v) if f.name == "dialog_state" else [dict(m) for m in v],
                    separators=(",", ":"), ensure_ascii=False)
            elif v is None:
                out[f.name] = ""
            else:
                out[f.name] = repr(v) if isinstance(v, float) else str(v)
        return out

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> CallRecord:
        """Inverse of ``to_hash``; unknown fields are ignored. StoreDataError if malformed."""
        if not data.get("uuid") or "node" not in data:
            raise StoreDataError(f"call hash without uuid/node: {_clip(data)}")
        try:
            kw: dict[str, Any] = {}
            for f in fields(cls):
                if f.name not in data:
                    continue
                raw = data[f.name]
                if f.name == "dialog_state":
                    kw[f.name] = json.loads(raw) if raw else {}
                    if not isinstance(kw[f.name], dict):
                        raise ValueError("dialog_state is not an object")
                elif f.name == "llm_history":
                    hist = json.loads(raw) if raw else []
                    if not isinstance(hist, list) or not all(isinstance(m, dict) for m in hist):
                        raise ValueError("llm_history is not a list of objects")
                    kw[f.name] = tuple(hist)
                elif f.name in ("answered_at", "ended_at"):
                    kw[f.name] = float(raw) if raw else None
                elif f.name in ("started_at", "updated_at"):
                    kw[f.name] = float(raw) if raw else 0.0
                elif f.name == "turns":
                    kw[f.name] = int(raw) if raw else 0
                else:
                    kw[f.name] = raw
            return cls(**kw)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            raise StoreDataError(f"call hash {data.get('uuid')!r}: {e}") from None


@dataclass(frozen=True)
class TurnRecord:
    """One turn as stored in ``<ns>:call:<uuid>:turns``: transcript, reply and hop timings.

    ``marks_ms`` are milliseconds since the call started, ``hops_ms`` hop durations (names
    from ``callctl.metrics.HOPS``), ``at`` the Unix time the turn was stored; ``endpoint`` how
    the turn ended (``Turn.endpoint``: reason, row, the turn model's probability, the silence
    waited; empty in records written before it existed).
    """

    index: int
    transcript: str = ""
    reply: str = ""
    at: float = 0.0
    marks_ms: Mapping[str, float] = field(default_factory=dict)
    hops_ms: Mapping[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    endpoint: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_timeline(cls, turn: Turn, origin: float, at: float | None = None) -> TurnRecord:
        """From a timeline ``Turn``; ``origin`` is the call's ``time.monotonic()`` start."""
        rec = turn.record(origin)
        latency = turn.turn_latency()
        return cls(index=rec["index"], transcript=rec["transcript"], reply=rec["reply"],
                   at=time.time() if at is None else at, marks_ms=rec["marks_ms"],
                   hops_ms=rec["hops_ms"],
                   latency_ms=None if latency is None else round(latency * 1000, 1),
                   endpoint=rec["endpoint"])

    def to_json(self) -> str:
        return json.dumps({f.name: (dict(v) if isinstance(v, Mapping) else v)
                           for f in fields(self) for v in [getattr(self, f.name)]},
                          separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> TurnRecord:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            names = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (ValueError, TypeError) as e:
            raise StoreDataError(f"turn record {_clip(text)}: {e}") from None


@dataclass(frozen=True)
class StoreEvent:
    """One record of the events stream; ``id`` is the stream id (``"1700000000000-0"``)."""

    id: str
    kind: str
    uuid: str
    node: str
    ts: float
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeInfo:
    """A live node's heartbeat: its id, when it beat (Unix time) and what it said."""

    node_id: str
    ts: float
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Op:
    """One primitive write. ``cmd`` is one of ``OP_CMDS``; ``args`` depend on it:

    hset (mapping,), rpush (value,), ltrim (start, stop), delete (), expire (seconds,),
    sadd (member,), srem (member,), set_px (value, milliseconds), xadd (fields, maxlen).
    """

    cmd: str
    key: str
    args: tuple[Any, ...] = ()


OP_CMDS = ("hset", "rpush", "ltrim", "delete", "expire", "sadd", "srem", "set_px", "xadd")

_DIGIT = re.compile(r"\d")


def redact(text: str, mode: str) -> str:
    """Apply ``store.transcripts``: ``full`` keeps text, ``redacted`` masks digits, ``off`` → ""."""
    if mode == "full":
        return text
    if mode == "redacted":
        return _DIGIT.sub("#", text)
    return ""


def _clip(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


class SessionStore(ABC):
    """The store of call sessions, events, node heartbeats and call ownership leases."""

    backend = "abstract"

    def __init__(self, cfg: StoreConfig) -> None:
        self.cfg = cfg
        self.keys = Keys(cfg.namespace)
        self.log = get_logger(component="store", backend=self.backend)
        # Latest written state of each live call (and its turns), replayed by a backend that
        # lost data (Redis restarted empty, writes dropped) once it is reachable again.
        self._live: dict[str, tuple[CallRecord, list[TurnRecord]]] = {}
        self._recently_ended: dict[str, tuple[CallRecord, list[TurnRecord], float]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start background work (the writer greenlet). Idempotent."""
        return None

    def close(self, timeout: float = 2.0) -> bool:
        """Flush pending writes for at most ``timeout`` seconds, then stop. True if all flushed."""
        return True

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait up to ``timeout`` s until every accepted write is in the store. True if so."""
        return True

    @property
    def healthy(self) -> bool:
        """True while the store takes writes; False while Redis is unreachable (degraded)."""
        return True

    @property
    def degraded(self) -> bool:
        """``not healthy``: calls go on, writes queue up (or are lost, counted)."""
        return not self.healthy

    @property
    def status(self) -> str:
        """``"healthy"`` or ``"degraded"``, for /readyz."""
        return "healthy" if self.healthy else "degraded"

    # -- write side: never blocks, never raises for an unreachable Redis ------------------

    def call_started(self, rec: CallRecord) -> None:
        """A call arrived: store it, add it to the active set, emit ``call_started``."""
        caller = rec.caller if self.cfg.events_raw_caller else mask_number(rec.caller)
        self._write_call(rec, [Op("sadd", self.keys.active, (rec.uuid,))],
                         self._event("call_started", rec, did=rec.did, route=rec.route,
                                     caller=caller))

    def call_answered(self, rec: CallRecord) -> None:
        """The call was answered: store it, emit ``answered``."""
        self._write_call(rec, [], self._event("answered", rec))

    def save_call(self, rec: CallRecord) -> None:
        """Store the call's current state (flow position, dialog state, history); no event."""
        self._write_call(rec, [], None)

    def add_turn(self, rec: CallRecord, turn: TurnRecord) -> None:
        """Append one turn (transcript per ``store.transcripts``) and store the call with it."""
        turn = replace(turn, transcript=redact(turn.transcript, self.cfg.transcripts),
                       reply=redact(turn.reply, self.cfg.transcripts))
        key = self.keys.turns(rec.uuid)
        ops = [Op("rpush", key, (turn.to_json(),)), Op("ltrim", key, (-MAX_TURNS, -1)),
               Op("expire", key, (self.cfg.retention_s,))]
        extra = {"index": str(turn.index)}
        if turn.latency_ms is not None:
            extra["latency_ms"] = repr(turn.latency_ms)
        self._write_call(rec, ops, self._event("turn", rec, **extra), turn)

    def call_transferred(self, rec: CallRecord, target: str) -> None:
        """The call was handed on to ``target`` (queue, extension): store it, emit event."""
        self._write_call(rec, [], self._event("transferred", rec, target=target))

    def dialog_event(self, rec: CallRecord, name: str, data: Mapping[str, Any]) -> None:
        """A dialog's ``event`` action (a flow's ``type = "event"``): a ``dialog`` record on
        the events stream with ``name`` and ``data`` (compact JSON, at most 4 KiB)."""
        body = json.dumps(dict(data), separators=(",", ":"), default=str)[:4096]
        self._write_call(rec, [], self._event("dialog", rec, name=name[:100], data=body))

    def call_ended(self, rec: CallRecord) -> None:
        """The call is over: store it (``state`` forced to ``ended``), drop it from the active
        set, let its keys expire after ``store.retention_s``, emit ``ended``."""
        now = time.time()
        rec = replace(rec, state="ended", ended_at=rec.ended_at or now)
        duration = max(0.0, (rec.ended_at or now) - rec.started_at) if rec.started_at else 0.0
        ops = [Op("srem", self.keys.active, (rec.uuid,)),
               Op("expire", self.keys.turns(rec.uuid), (self.cfg.retention_s,))]
        self._write_call(rec, ops, self._event("ended", rec, cause=rec.end_cause,
                                               duration_s=f"{duration:.3f}",
                                               turns=str(rec.turns)))

    def heartbeat(self, node_id: str, info: Mapping[str, Any] | None = None) -> None:
        """Mark ``node_id`` alive for ``store.heartbeat_ttl_s`` (call this every ttl/3)."""
        body = json.dumps({"ts": time.time(), **dict(info or {})}, separators=(",", ":"))
        ttl = max(1, round(self.cfg.heartbeat_ttl_s * 1000))
        self._submit((Op("set_px", self.keys.node(node_id), (body, ttl)),))

    def node_stopped(self, node_id: str) -> None:
        """Remove ``node_id``'s heartbeat at a clean shutdown."""
        self._submit((Op("delete", self.keys.node(node_id)),))

    # -- read side: synchronous, may raise StoreUnavailable ------------------------------

    def get_call(self, uuid: str) -> CallRecord | None:
        """The stored call, or None if unknown/expired."""
        data = self._read_hash(self.keys.call(uuid))
        return CallRecord.from_hash(data) if data else None

    def get_turns(self, uuid: str) -> list[TurnRecord]:
        """The call's turns in order (a turn written twice by a retried batch appears once)."""
        seen: dict[int, TurnRecord] = {}
        for text in self._read_list(self.keys.turns(uuid)):
            t = TurnRecord.from_json(text)
            seen[t.index] = t
        return [seen[i] for i in sorted(seen)]

    def active_calls(self) -> list[CallRecord]:
        """Calls not yet ended, on every node. Stale members (hash expired) are pruned."""
        uuids = sorted(self._read_set(self.keys.active))
        out: list[CallRecord] = []
        stale: list[str] = []
        for uuid, data in zip(uuids, self._read_hashes([self.keys.call(u) for u in uuids]),
                              strict=True):
            if not data:
                stale.append(uuid)
                continue
            try:
                rec = CallRecord.from_hash(data)
            except StoreDataError as e:
                self.log.warning("store_bad_call_record", call_uuid=uuid, error=str(e))
                continue
            if rec.ended:
                stale.append(uuid)
            else:
                out.append(rec)
        for uuid in stale:
            self._submit((Op("srem", self.keys.active, (uuid,)),))
        return out

    def calls_of_node(self, node_id: str) -> list[CallRecord]:
        """Active calls last driven by ``node_id``."""
        return [c for c in self.active_calls() if c.node == node_id]

    def nodes(self) -> list[NodeInfo]:
        """Nodes whose heartbeat has not lapsed, sorted by id."""
        out = []
        for node_id, body in sorted(self._read_nodes().items()):
            try:
                data = json.loads(body)
                ts = float(data.pop("ts", 0.0))
            except (ValueError, TypeError, AttributeError):
                data, ts = {}, 0.0
            out.append(NodeInfo(node_id=node_id, ts=ts, info=data))
        return out

    def read_events(self, since_id: str = "0-0", count: int = 100) -> list[StoreEvent]:
        """Up to ``count`` events with ids after ``since_id`` (``"0-0"``: from the start)."""
        out = []
        for eid, data in self._read_stream(self.keys.events, since_id, count):
            extra = {k: v for k, v in data.items() if k not in ("kind", "uuid", "node", "ts")}
            try:
                ts = float(data.get("ts", "0"))
            except ValueError:
                ts = 0.0
            out.append(StoreEvent(id=eid, kind=data.get("kind", ""), uuid=data.get("uuid", ""),
                                  node=data.get("node", ""), ts=ts, fields=extra))
        return out

    # -- ownership lease ------------------------------------------------------------------

    @abstractmethod
    def claim(self, uuid: str, node_id: str, ttl_s: float) -> bool:
        """Take the call's lease if nobody holds it (``SET NX PX``). True if ``node_id`` won."""

    @abstractmethod
    def renew(self, uuid: str, node_id: str, ttl_s: float) -> bool:
        """Extend ``node_id``'s lease. A lapsed lease nobody took is re-taken. False: another
        node holds it now; stop driving the call."""

    def renew_many(self, uuids: Sequence[str], node_id: str, ttl_s: float) -> list[bool]:
        """``renew`` each of ``uuids`` (results in the same order), in one round trip where
        the backend can. Raises ``StoreError`` like ``renew``."""
        return [self.renew(u, node_id, ttl_s) for u in uuids]

    @abstractmethod
    def release(self, uuid: str, node_id: str) -> bool:
        """Drop the lease if ``node_id`` holds it (compare-and-delete). True if dropped."""

    @abstractmethod
    def owner(self, uuid: str) -> str | None:
        """The node holding the call's lease, or None."""

    def takeover_if_expired(self, uuid: str, node_id: str, ttl_s: float) -> bool:
        """Take the lease if it lapsed (or is already ``node_id``'s, e.g. after a restart).
        False while another node holds a live lease."""
        if self.claim(uuid, node_id, ttl_s):
            return True
        return self.owner(uuid) == node_id and self.renew(uuid, node_id, ttl_s)

    # -- backend primitives ---------------------------------------------------------------

    @abstractmethod
    def _submit(self, ops: tuple[Op, ...]) -> None:
        """Accept one write (applied together, in order). Never blocks on I/O."""

    @abstractmethod
    def _read_hash(self, key: str) -> dict[str, str]: ...

    @abstractmethod
    def _read_hashes(self, keys: Sequence[str]) -> list[dict[str, str]]: ...

    @abstractmethod
    def _read_list(self, key: str) -> list[str]: ...

    @abstractmethod
    def _read_set(self, key: str) -> set[str]: ...

    @abstractmethod
    def _read_nodes(self) -> dict[str, str]:
        """node id → heartbeat JSON of every live node."""

    @abstractmethod
    def _read_stream(self, key: str, since_id: str, count: int
                     ) -> list[tuple[str, dict[str, str]]]: ...

    # -- helpers --------------------------------------------------------------------------

    def _event(self, kind: str, rec: CallRecord, **extra: str) -> Op:
        body = {"kind": kind, "uuid": rec.uuid, "node": rec.node, "ts": repr(time.time()),
                **extra}
        return Op("xadd", self.keys.events, (body, self.cfg.events_maxlen))

    def _call_ops(self, rec: CallRecord) -> list[Op]:
        key = self.keys.call(rec.uuid)
        return [Op("hset", key, (rec.to_hash(),)), Op("expire", key, (self.cfg.retention_s,))]

    def _write_call(self, rec: CallRecord, ops: list[Op], event: Op | None,
                    turn: TurnRecord | None = None) -> None:
        history = tuple(
            {**m, "content": redact(str(m.get("content", "")), self.cfg.transcripts)}
            for m in rec.llm_history) if self.cfg.transcripts != "off" else ()
        rec = replace(rec, updated_at=time.time(), llm_history=history)
        known = self._live.pop(rec.uuid, None) or self._recently_ended.get(rec.uuid)
        turns: list[TurnRecord] = known[1] if known else []
        if turn is not None:
            turns.append(turn)
            del turns[:-MAX_TURNS]
        if rec.ended:
            self._remember_ended(rec, turns)
        else:
            self._live[rec.uuid] = (rec, turns)
        self._submit(tuple([*self._call_ops(rec), *ops, *([event] if event else [])]))

    def _remember_ended(self, rec: CallRecord, turns: list[TurnRecord]) -> None:
        """Keep an ended call for replay: all of them while the store is down (up to
        RECENTLY_ENDED_MAX), only the last RECENTLY_ENDED_S seconds' while it is healthy."""
        now = time.monotonic()
        ended = self._recently_ended
        ended[rec.uuid] = (rec, turns, now)
        while ended:
            first = next(iter(ended))
            if len(ended) > RECENTLY_ENDED_MAX or (
                    self.healthy and ended[first][2] < now - RECENTLY_ENDED_S):
                del ended[first]
            else:
                break

    def _resync_ops(self, since_monotonic: float) -> list[tuple[Op, ...]]:
        """Writes that restore every live call (hash, turns, active set) and re-close calls
        that ended since ``since_monotonic``: replayed after an outage, all idempotent."""
        out = []
        for uuid, (rec, turns, at) in list(self._recently_ended.items()):
            if at < since_monotonic - 1.0:
                del self._recently_ended[uuid]
            else:
                out.append(self._restore_ops(rec, turns))
        out += [self._restore_ops(rec, turns) for rec, turns in self._live.values()]
        return out

    def _restore_ops(self, rec: CallRecord, turns: list[TurnRecord]) -> tuple[Op, ...]:
        tkey = self.keys.turns(rec.uuid)
        return (*self._call_ops(rec),
                Op("srem" if rec.ended else "sadd", self.keys.active, (rec.uuid,)),
                Op("delete", tkey), *(Op("rpush", tkey, (t.to_json(),)) for t in turns),
                Op("expire", tkey, (self.cfg.retention_s,)))
