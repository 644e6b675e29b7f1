"""The NOC command line: ``callctl status``, ``calls``, ``show``, ``hangup``, ``transfer``.

How this works: every command reads the config (``--config``) and talks to three things,
none of which needs a restart:

- **Redis** (``store.redis_url``, through ``callctl.store``): live calls of every node, each
  call's turns (transcript, reply, hop timings), and the node heartbeats. A daemon's heartbeat
  (``Daemon.heartbeat_info``) carries its ``control_url``, ``max_calls``, ``calls`` and
  ``ready``.
- **the daemon's HTTP port** (``metrics.listen_host:listen_port`` for the local daemon, the
  heartbeat's ``control_url`` for the node owning a call): ``/healthz``, ``/readyz`` (named
  readiness checks), ``/metrics`` (store queue, ESL link) and the control endpoints
  ``GET /calls`` (live state), ``POST /calls/<uuid>/hangup|transfer``.
- **FreeSWITCH's inbound Event Socket** (``[esl]`` host/port/password), only as the fallback
  of ``hangup``/``transfer`` when the owning daemon's control endpoint cannot be reached:
  ``api uuid_kill <uuid> <cause>`` / ``api uuid_transfer <uuid> <dest> XML <context>``.

Output is a human-readable table, or JSON with ``--json`` (``show --follow --json`` prints one
JSON object per line). Failures print one line on stderr, ``callctl <command>: <what>``, and
exit with status 1: Redis unreachable, unknown call uuid, daemon not running, bad hangup cause.
``status`` exits 1 when the local daemon is down or not ready, or Redis is unreachable.

Caller numbers are masked (last 4 digits) unless ``--show-caller`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from callctl import log as log_mod
from callctl.causes import HANGUP_CAUSES, unknown_cause_hint
from callctl.config import Config, MetricsConfig, mask_url
from callctl.log import mask_number
from callctl.metrics import HOPS
from callctl.store import (
    CallRecord,
    NodeInfo,
    SessionStore,
    StoreDataError,
    StoreUnavailable,
    TurnRecord,
    open_store,
)

#: Time allowed to one HTTP request to a daemon.
HTTP_TIMEOUT_S = 2.0
#: Bounds of ``show --follow --interval``.
POLL_MIN_S, POLL_MAX_S = 0.2, 10.0
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

_DEST_WORD_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+*#.@:-")


class NocError(Exception):
    """A failure the command reports as one line on stderr and exit status 1."""


class DaemonUnreachable(NocError):
    """Nothing answers HTTP at the daemon's address (not running, or firewalled)."""


# ------------------------------------------------------------------------------------------
# Pure helpers: validation and formatting
# ------------------------------------------------------------------------------------------


def check_cause(cause: str) -> str:
    """The cause name upper-cased; NocError naming the valid ones if it is not one."""
    name = cause.strip().upper()
    if name not in HANGUP_CAUSES:
        raise NocError(f"unknown hangup cause {cause!r}; {unknown_cause_hint(name)}")
    return name


def check_destination(dest: str) -> list[str]:
    """``"1000"``, ``"1000 XML ctx"`` or a SIP URI, split in words; NocError otherwise
    (the value ends up in an ESL command line, so no blanks inside words, no control
    characters, at most 3 words)."""
    words = dest.split(" ")
    if not dest or len(words) > 3 or any(
            not w or len(w) > 128 or not set(w) <= _DEST_WORD_CHARS for w in words):
        raise NocError(f"bad transfer destination {dest[:80]!r}: use an extension "
                       "('1000'), '1000 XML <context>' or a SIP URI ('sip:agent@pbx')")
    return words


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned text table (two spaces between columns), headers first."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r]
                                            for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def fmt_duration(seconds: float | None) -> str:
    """``75.2`` → ``1:15``; ``3725`` → ``1:02:05``; None → ``-``."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def fmt_ms(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.0f} ms"


def fmt_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def caller_shown(number: str, show: bool) -> str:
    return number if show else mask_number(number)


def call_row(rec: CallRecord, turns: Sequence[TurnRecord], now: float,
             live_state: str | None = None, show_caller: bool = False) -> dict[str, Any]:
    """One row of ``callctl calls`` (JSON-able). ``live_state`` (from the owning daemon's
    ``GET /calls``) wins over the stored state, which is only rewritten at turn boundaries."""
    start = rec.answered_at or rec.started_at
    last = next((t.latency_ms for t in reversed(turns) if t.latency_ms is not None), None)
    return {"uuid": rec.uuid, "node": rec.node, "route": rec.route, "did": rec.did,
            "caller": caller_shown(rec.caller, show_caller),
            "state": live_state or rec.state, "state_source": "daemon" if live_state else "redis",
            "started_at": rec.started_at, "answered_at": rec.answered_at,
            "duration_s": round(now - start, 1) if start else None,
            "turns": max(rec.turns, len(turns)), "last_turn_latency_ms": last}


def render_calls(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no live calls"
    return table(["UUID", "NODE", "ROUTE", "STATE", "DURATION", "TURNS", "LAST LATENCY",
                  "CALLER"],
                 [[r["uuid"], r["node"], r["route"], r["state"], fmt_duration(r["duration_s"]),
                   r["turns"], fmt_ms(r["last_turn_latency_ms"]), r["caller"]] for r in rows]
                 ) + f"\n{len(rows)} live call(s)"


def call_view(rec: CallRecord, show_caller: bool, now: float) -> dict[str, Any]:
    """The call part of ``callctl show`` (JSON-able; no dialog state or LLM history)."""
    end = rec.ended_at or now
    start = rec.answered_at or rec.started_at
    return {"uuid": rec.uuid, "node": rec.node, "state": rec.state, "route": rec.route,
            "did": rec.did, "caller": caller_shown(rec.caller, show_caller),
            "started_at": rec.started_at, "answered_at": rec.answered_at,
            "ended_at": rec.ended_at, "end_cause": rec.end_cause, "ended": rec.ended,
            "duration_s": round(end - start, 1) if start else None, "turns": rec.turns,
            "flow_node": rec.flow_node}


def turn_view(t: TurnRecord) -> dict[str, Any]:
    return {"index": t.index, "at": t.at, "transcript": t.transcript, "reply": t.reply,
            "latency_ms": t.latency_ms, "hops_ms": dict(t.hops_ms), "marks_ms": dict(t.marks_ms)}


def render_call(c: Mapping[str, Any]) -> str:
    lines = [
        f"call      {c['uuid']}",
        f"node      {c['node']}",
        f"route     {c['route'] or '-'} (DID {c['did'] or '-'}), caller {c['caller'] or '-'}",
        f"state     {c['state']}" + (f", ended {c['end_cause'] or ''}".rstrip()
                                     if c["ended"] else ""),
        f"started   {fmt_time(c['started_at'])}, answered {fmt_time(c['answered_at'])}"
        + (f", ended {fmt_time(c['ended_at'])}" if c["ended_at"] else ""),
        f"duration  {fmt_duration(c['duration_s'])}, {c['turns']} turn(s)"
        + (f", at flow node {c['flow_node']}" if c["flow_node"] else ""),
    ]
    return "\n".join(lines)


def render_turn(t: Mapping[str, Any]) -> str:
    """One turn: latency and the hop timeline on the first line, then who said what."""
    hops = t["hops_ms"]
    parts = [f"{h} {hops[h]:.0f}" for h in HOPS if h in hops]
    start = t["marks_ms"].get("speech_end")
    at = f"+{start / 1000:.1f}s" if start is not None else ""
    head = f"turn {t['index']:<3} {at:>8}  latency {fmt_ms(t['latency_ms'])}"
    if parts:
        head += "  [" + " · ".join(parts) + " ms]"
    return "\n".join([head, f"  caller: {t['transcript']}", f"  bot:    {t['reply']}"])


def render_ended(c: Mapping[str, Any]) -> str:
    return (f"call ended: {c['end_cause'] or 'unknown cause'} after "
            f"{fmt_duration(c['duration_s'])}, {c['turns']} turn(s)")


# ------------------------------------------------------------------------------------------
# I/O: daemon HTTP, Redis, ESL
# ------------------------------------------------------------------------------------------


def local_url(m: MetricsConfig) -> str:
    """Base URL of the daemon on this host (a wildcard listen address means loopback)."""
    host = m.listen_host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{m.listen_port}"


def http_request(url: str, body: Mapping[str, Any] | None = None,
                 timeout: float = HTTP_TIMEOUT_S) -> tuple[int, Any]:
    """GET (or POST ``body`` as JSON) ``url``: (status, parsed JSON or text). A 4xx/5xx is a
    status, not an error; DaemonUnreachable if nothing answers within ``timeout``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, ctype = r.status, r.read(1 << 22), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(1 << 16), e.headers.get("Content-Type", "")
    except urllib.error.URLError as e:
        reason = e.reason
        text = "connection refused" if isinstance(reason, ConnectionRefusedError) else str(reason)
        raise DaemonUnreachable(f"{text} at {url}") from None
    except (OSError, ValueError) as e:
        raise DaemonUnreachable(f"{type(e).__name__}: {e} at {url}") from None
    text = raw.decode("utf-8", "replace")
    if "json" in ctype:
        try:
            return status, json.loads(text)
        except ValueError:
            pass
    return status, text


def scrape_values(text: str, names: Sequence[str]) -> dict[str, float]:
    """Sum of the samples of each metric in ``names`` in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in names:
                out[s.name] = out.get(s.name, 0.0) + float(s.value)
    return out


@contextmanager
def reader(cfg: Config) -> Iterator[SessionStore]:
    """The session store for reading; NocError if ``store.redis_url`` is not set."""
    if not cfg.store.redis_url:
        raise NocError("store.redis_url is not set: the NOC commands read calls from Redis")
    try:
        store = open_store(cfg.store)
    except ValueError as e:
        raise NocError(str(e)) from None
    store.start()           # the writer prunes stale members of the active set for us
    try:
        yield store
    finally:
        store.close(timeout=1.0)


def live_states(nodes: Sequence[NodeInfo], timeout: float = 1.0) -> dict[str, str]:
    """uuid → state from each node's ``GET /calls``; nodes that do not answer are skipped."""
    out: dict[str, str] = {}
    for n in nodes:
        url = n.info.get("control_url")
        if not isinstance(url, str) or not url:
            continue
        try:
            status, body = http_request(f"{url}/calls", timeout=timeout)
        except DaemonUnreachable:
            continue
        if status == 200 and isinstance(body, dict):
            for c in body.get("calls", []):
                if isinstance(c, dict) and c.get("uuid") and c.get("state"):
                    out[str(c["uuid"])] = str(c["state"])
    return out


def esl_api(cfg: Config, command: str) -> str:
    """One ``api`` command over a fresh inbound ESL connection to ``[esl]``; returns the
    reply body. NocError if FreeSWITCH cannot be reached or answers -ERR."""
    from callctl.esl.adapter import EslCommandFailed, EslError, InboundConnection, check_reply
    from callctl.metrics import Metrics

    e = cfg.esl
    where = f"FreeSWITCH ESL {e.host}:{e.port}"
    conn = InboundConnection(e.host, e.port, e.password, command_timeout=e.command_timeout_s,
                             metrics=Metrics())
    try:
        conn.connect()
        return check_reply(command, conn.send(f"api {command}"))
    except EslCommandFailed as err:
        raise NocError(f"{where} refused {command.split()[0]}: {err.reply.strip()}") from None
    except EslError as err:
        raise NocError(f"{where}: {err}") from None
    finally:
        try:
            conn.stop(exit_timeout=0.5)
        except Exception:
            pass


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------


def gather_status(cfg: Config, now: float | None = None) -> dict[str, Any]:
    """Everything ``callctl status`` shows (JSON-able); ``ok`` is the exit verdict."""
    now = time.time() if now is None else now
    base = local_url(cfg.metrics)
    daemon: dict[str, Any] = {"url": base, "alive": False, "ready": None, "checks": {},
                              "failing": [], "error": None}
    scraped: dict[str, float] = {}
    local_calls: int | None = None
    try:
        status, _ = http_request(f"{base}/healthz")
        daemon["alive"] = status == 200
        status, body = http_request(f"{base}/readyz")
        if isinstance(body, dict):
            daemon.update(ready=bool(body.get("ready")), checks=body.get("checks", {}),
                          failing=body.get("failing", []), errors=body.get("errors", {}))
        status, text = http_request(f"{base}/metrics")
        if status == 200 and isinstance(text, str):
            scraped = scrape_values(text, ("callctl_esl_connected", "callctl_store_up",
                                           "callctl_store_queue_depth", "callctl_calls_active",
                                           "callctl_store_writes_lost_total"))
        status, body = http_request(f"{base}/calls")
        if status == 200 and isinstance(body, dict):
            local_calls = len(body.get("calls", []))
    except DaemonUnreachable as e:
        daemon["error"] = f"not running ({e})"
    checks = daemon["checks"]
    esl_up = checks.get("esl_control")
    if esl_up is None and "callctl_esl_connected" in scraped:
        esl_up = scraped["callctl_esl_connected"] > 0
    store: dict[str, Any] = {"url": mask_url(cfg.store.redis_url) or None,
                             "reachable": False, "error": None,
                             "daemon_store_up": _flag(scraped.get("callctl_store_up")),
                             "queue_depth": _int(scraped.get("callctl_store_queue_depth")),
                             "writes_lost": _int(scraped.get("callctl_store_writes_lost_total"))}
    nodes: list[dict[str, Any]] = []
    try:
        with reader(cfg) as s:
            for n in s.nodes():
                nodes.append({"node": n.node_id, "age_s": round(max(0.0, now - n.ts), 1),
                              **{k: n.info.get(k) for k in
                                 ("ready", "calls", "max_calls", "control_url")}})
            active = len(s.active_calls())
        store["reachable"] = True
        store["active_calls"] = active
    except (NocError, StoreUnavailable, StoreDataError) as e:
        store["error"] = str(e)
    if local_calls is None and "callctl_calls_active" in scraped:
        local_calls = int(scraped["callctl_calls_active"])
    out: dict[str, Any] = {
        "daemon": daemon,
        "esl": {"connected": esl_up, "switch": f"{cfg.esl.host}:{cfg.esl.port}"},
        "store": store,
        "models": {"asr": cfg.asr.engine, "tts": cfg.tts.engine,
                   "loaded": checks.get("voice")},
        "capacity": {"node": cfg.daemon.node_id, "calls": local_calls,
                     "max_calls": cfg.daemon.max_calls},
        "nodes": nodes,
    }
    out["ok"] = bool(daemon["alive"] and daemon["ready"] and store["reachable"])
    return out


def _flag(v: float | None) -> bool | None:
    return None if v is None else v > 0


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)


def _yes(v: bool | None, yes: str, no: str) -> str:
    return "unknown" if v is None else (yes if v else no)


def render_status(st: Mapping[str, Any]) -> str:
    d, e, s, m, c = st["daemon"], st["esl"], st["store"], st["models"], st["capacity"]
    if d["alive"]:
        checks = ", ".join(f"{k} {'ok' if v else 'FAILING'}" for k, v in d["checks"].items())
        daemon = (f"up at {d['url']}, {'ready' if d['ready'] else 'NOT READY'}"
                  + (f" ({checks})" if checks else ""))
    else:
        daemon = f"DOWN: {d['error'] or 'unhealthy'}"
    if s["reachable"]:
        redis = f"reachable at {s['url']}, {s['active_calls']} live call(s) across nodes"
    else:
        redis = f"UNREACHABLE: {s['error']}"
    if s["daemon_store_up"] is not None:
        redis += (f"; daemon's writer {'healthy' if s['daemon_store_up'] else 'DEGRADED'}, "
                  f"queue {s['queue_depth']}, writes lost {s['writes_lost']}")
    loaded = _yes(m["loaded"], "loaded", "NOT LOADED")
    calls = "?" if c["calls"] is None else c["calls"]
    lines = [
        f"daemon    {daemon}",
        f"esl       {_yes(e['connected'], 'connected', 'DISCONNECTED')} "
        f"(FreeSWITCH {e['switch']})",
        f"redis     {redis}",
        f"models    asr {m['asr']}, tts {m['tts']}: {loaded}",
        f"capacity  {calls} / {c['max_calls']} calls on {c['node']}",
    ]
    if st["nodes"]:
        lines.append("nodes")
        lines.append(table(["  NODE", "HEARTBEAT", "READY", "CALLS", "CONTROL"], [
            ["  " + n["node"], f"{n['age_s']:.1f} s ago", _yes(n["ready"], "yes", "no"),
             f"{'?' if n['calls'] is None else n['calls']} / {n['max_calls'] or '?'}",
             n["control_url"] or "-"] for n in st["nodes"]]))
    else:
        lines.append("nodes     none seen in Redis" if s["reachable"] else "nodes     unknown")
    return "\n".join(lines)


def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    st = gather_status(cfg)
    print(json.dumps(st, indent=2) if args.json else render_status(st))
    return 0 if st["ok"] else 1


def gather_calls(store: SessionStore, show_caller: bool = False,
                 now: float | None = None) -> list[dict[str, Any]]:
    """Live calls on every node, oldest first, with the live state where a node answers."""
    now = time.time() if now is None else now
    calls = sorted(store.active_calls(), key=lambda r: r.started_at)
    states = live_states(store.nodes()) if calls else {}
    return [call_row(r, store.get_turns(r.uuid), now, states.get(r.uuid), show_caller)
            for r in calls]


def cmd_calls(cfg: Config, args: argparse.Namespace) -> int:
    with reader(cfg) as store:
        rows = gather_calls(store, args.show_caller)
    print(json.dumps({"calls": rows}, indent=2) if args.json else render_calls(rows))
    return 0


def _get_call(store: SessionStore, uuid: str) -> CallRecord:
    rec = store.get_call(uuid)
    if rec is None:
        raise NocError(f"unknown call uuid {uuid} (not in Redis: never seen, or older than "
                       "store.retention_s)")
    return rec


def cmd_show(cfg: Config, args: argparse.Namespace,
             sleep: Callable[[float], None] = time.sleep) -> int:
    interval = min(POLL_MAX_S, max(POLL_MIN_S, args.interval))
    out = sys.stdout
    with reader(cfg) as store:
        rec = _get_call(store, args.uuid)
        turns = [turn_view(t) for t in store.get_turns(args.uuid)]
        call = call_view(rec, args.show_caller, time.time())
        if args.json and not args.follow:
            print(json.dumps({"call": call, "turns": turns}, indent=2))
            return 0
        emit: Callable[[str, Any], None] = (
            (lambda kind, v: print(json.dumps({kind: v}), file=out, flush=True)) if args.json
            else (lambda kind, v: print({"call": render_call, "turn": render_turn,
                                         "ended": render_ended}[kind](v), file=out,
                                        flush=True)))
        emit("call", call)
        for t in turns:
            emit("turn", t)
        if not args.follow:
            return 0
        seen = {t["index"] for t in turns}
        try:
            while not rec.ended:
                sleep(interval)
                now_rec = store.get_call(args.uuid)
                if now_rec is None:
                    raise NocError(f"call {args.uuid} vanished from Redis (expired)")
                rec = now_rec
                for new in store.get_turns(args.uuid):
                    if new.index not in seen:
                        seen.add(new.index)
                        emit("turn", turn_view(new))
            emit("ended", call_view(rec, args.show_caller, time.time()))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    return 0


@dataclasses.dataclass
class ControlResult:
    """How a hangup/transfer was delivered: ``path`` is ``daemon`` or ``esl``."""

    uuid: str
    action: str
    argument: str
    node: str
    path: str
    target: str
    fallback_reason: str | None = None

    def text(self) -> str:
        done = {"hangup": f"hung up with {self.argument}",
                "transfer": f"transferred to {self.argument}"}[self.action]
        if self.path == "daemon":
            return f"call {self.uuid} {done} via the daemon control endpoint on node " \
                   f"{self.node} ({self.target})"
        return (f"call {self.uuid} {done} via FreeSWITCH ESL ({self.target}); the daemon "
                f"control endpoint was not used: {self.fallback_reason}")


def control_call(cfg: Config, store: SessionStore, uuid: str, action: str,
                 argument: str) -> ControlResult:
    """Hang up or transfer ``uuid``: through the owning node's control endpoint (its
    heartbeat's ``control_url``), else through FreeSWITCH's inbound ESL. NocError if the call
    is unknown or over, or neither path works."""
    rec = _get_call(store, uuid)
    if rec.ended:
        raise NocError(f"call {uuid} already ended ({rec.end_cause or 'unknown cause'})")
    node = next((n for n in store.nodes() if n.node_id == rec.node), None)
    url = node.info.get("control_url") if node is not None else None
    why: str
    if node is None:
        why = f"node {rec.node} has no live heartbeat in Redis"
    elif not isinstance(url, str) or not url:
        why = f"node {rec.node} publishes no control_url"
    else:
        body = {"cause": argument} if action == "hangup" else {"destination": argument}
        try:
            status, reply = http_request(f"{url}/calls/{uuid}/{action}", body)
        except DaemonUnreachable as e:
            status, reply, why = 0, None, f"daemon on node {rec.node} unreachable ({e})"
        error = reply.get("error") if isinstance(reply, dict) else reply
        if status == 200:
            return ControlResult(uuid, action, argument, rec.node, "daemon", url)
        if status == 400:
            raise NocError(f"daemon on node {rec.node} refused the {action}: {error}")
        if status:
            why = f"daemon on node {rec.node} answered {status}: {error}"
    if action == "hangup":
        esl_api(cfg, f"uuid_kill {uuid} {argument}")
    else:
        esl_api(cfg, f"uuid_transfer {uuid} {_esl_destination(cfg, argument)}")
    return ControlResult(uuid, action, argument, rec.node, "esl",
                         f"{cfg.esl.host}:{cfg.esl.port}", why)


def _esl_destination(cfg: Config, dest: str) -> str:
    """``uuid_transfer`` arguments for ``dest`` (as the daemon's ``CallControl.transfer``):
    an extension gets ``XML <esl.transfer_context>``; a SIP URI is bridged inline."""
    if dest.startswith("sip:") or "@" in dest:
        uri = dest[4:] if dest.startswith("sip:") else dest
        return f"bridge:sofia/{cfg.esl.bridge_profile}/{uri} inline"
    words = dest.split(" ")
    return " ".join(words if len(words) > 1 else [*words, "XML", cfg.esl.transfer_context])


def cmd_control(cfg: Config, args: argparse.Namespace) -> int:
    if args.command == "hangup":
        action, argument = "hangup", check_cause(args.cause)
    else:
        check_destination(args.destination)
        action, argument = "transfer", args.destination
    with reader(cfg) as store:
        result = control_call(cfg, store, args.uuid, action, argument)
    print(json.dumps(dataclasses.asdict(result), indent=2) if args.json else result.text())
    return 0


COMMAND_FUNCS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "status": cmd_status, "calls": cmd_calls, "show": cmd_show,
    "hangup": cmd_control, "transfer": cmd_control,
}


# ------------------------------------------------------------------------------------------
# CLI glue
# ------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from callctl.cli import add_config_argument

    add_config_argument(p)
    command = p.prog.rsplit(" ", 1)[-1]
    p.add_argument("--json", action="store_true", help="Print JSON for scripts.")
    if command in ("calls", "show"):
        p.add_argument("--show-caller", action="store_true",
                       help="Show caller numbers in full (default: last 4 digits).")
    if command in ("show", "hangup", "transfer"):
        p.add_argument("uuid", help="The call's uuid (as in `callctl calls`).")
    if command == "show":
        p.add_argument("--follow", "-f", action="store_true",
                       help="Keep printing new turns until the call ends (Ctrl-C stops).")
        p.add_argument("--interval", type=float, default=1.0, metavar="S",
                       help=f"Poll interval of --follow, {POLL_MIN_S}-{POLL_MAX_S} s "
                            "(default 1).")
    if command == "hangup":
        p.add_argument("--cause", default="NORMAL_CLEARING",
                       help="FreeSWITCH hangup cause, any name of 1.10's switch_call_cause_t "
                       "but NONE (NORMAL_CLEARING, USER_BUSY, CALL_REJECTED, "
                       "SUBSCRIBER_ABSENT, NO_ROUTE_DESTINATION, …; default "
                       "NORMAL_CLEARING).")
    if command == "transfer":
        p.add_argument("destination",
                       help="Extension ('1000'), '1000 XML <context>' or SIP URI.")


def main(args: argparse.Namespace) -> int:
    from callctl.cli import load_config_or_exit

    cfg = load_config_or_exit(args)
    # Library warnings (store writer, ESL) must not mix into stdout tables or JSON.
    log_mod.setup(dataclasses.replace(cfg.log, level="error", format="console"),
                  stream=sys.stderr)
    try:
        return COMMAND_FUNCS[args.command](cfg, args)
    except NocError as e:
        print(f"callctl {args.command}: {e}", file=sys.stderr)
    except StoreUnavailable as e:
        print(f"callctl {args.command}: Redis unreachable at {mask_url(cfg.store.redis_url)} "
              f"({e})", file=sys.stderr)
    except StoreDataError as e:
        print(f"callctl {args.command}: unexpected data in Redis: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 1


__all__ = [
    "HANGUP_CAUSES",
    "ControlResult",
    "DaemonUnreachable",
    "NocError",
    "add_arguments",
    "check_cause",
    "check_destination",
    "control_call",
    "gather_calls",
    "gather_status",
    "main",
]
