"""Start-up reconciliation: what Redis says about calls vs. what FreeSWITCH still holds.

How this works: ``parse_channels`` turns the body of ``api show channels as json`` into
``FsChannel`` records (no I/O). ``plan_reconciliation`` is a pure function from (this node,
the active calls in the store, their lease owners, the channels, the live nodes) to a
``ReconcilePlan``; ``reconcile`` reads the store and calls it. The daemon executes the plan:

==========  ==================================================================================
``close``   calls in the store last driven by THIS node that FreeSWITCH no longer has: write
            them ended (``store.call_ended`` with cause ``LOST_ON_RESTART``) and release the
            lease.
``resume``  channels FreeSWITCH has whose call is live in the store and whose lease is free,
            lapsed, or already this node's: ``store.takeover_if_expired`` and, if True, drive
            the call from ``record.flow_node`` with ``record.llm_history`` (the channel comes
            back on the outbound socket, or is sent there with ``uuid_transfer``).
``end``     channels FreeSWITCH has that are parked in/around our socket application but have
            no live state anywhere: hang them up cleanly (``uuid_kill``) instead of dead air.
``skip``    left alone, with the reason: another live node holds the lease; the call ended
            in the store (e.g. transferred to a human and bridged); an outbound leg; a
            channel running an application that is not ours.
==========  ==================================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from callctl.store.base import CallRecord, SessionStore, StoreError

#: Hangup cause written for calls closed because FreeSWITCH no longer has them.
LOST_CAUSE = "LOST_ON_RESTART"

#: Applications a channel may be running while it waits for (or talks to) callctl: the
#: socket app itself, and what the crash-safe dialplan runs between attempts.
OUR_APPS = frozenset({"socket", "park", "playback", "sleep", "answer", ""})


class ChannelListError(StoreError):
    """The ``show channels as json`` body is not what FreeSWITCH sends. ``body`` is clipped."""

    def __init__(self, problem: str, body: bytes | str) -> None:
        shown = body[:120] if isinstance(body, str) else body[:120].decode("utf-8", "replace")
        super().__init__(f"show channels as json: {problem}: {shown!r}")
        self.problem = problem


@dataclass(frozen=True)
class FsChannel:
    """One row of ``show channels as json`` (the columns callctl uses)."""

    uuid: str
    direction: str = ""
    state: str = ""
    callstate: str = ""
    application: str = ""
    application_data: str = ""
    dest: str = ""
    cid_num: str = ""
    created_epoch: int = 0
    hostname: str = ""


def parse_channels(body: bytes | str) -> list[FsChannel]:
    """Parse the reply body of ``api show channels as json``.

    Accepts ``{"row_count":N,"rows":[...]}`` and the zero-row form ``{"row_count": 0}\\n``.
    Raises ChannelListError for anything else (never another exception)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ChannelListError("not JSON", body) from None
    if not isinstance(data, dict) or "row_count" not in data:
        raise ChannelListError("no row_count", body)
    rows = data.get("rows", [])
    if not isinstance(rows, list):
        raise ChannelListError("rows is not a list", body)
    out = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("uuid"), str) or not row["uuid"]:
            raise ChannelListError("row without uuid", body)
        get = _getter(row, body)
        try:
            created = int(get("created_epoch") or 0)
        except ValueError:
            raise ChannelListError("created_epoch is not a number", body) from None
        out.append(FsChannel(
            uuid=row["uuid"], direction=get("direction"), state=get("state"),
            callstate=get("callstate"), application=get("application"),
            application_data=get("application_data"), dest=get("dest"),
            cid_num=get("cid_num"), created_epoch=created, hostname=get("hostname")))
    return out


def _getter(row: Mapping[str, object], body: bytes | str) -> Callable[[str], str]:
    def get(name: str) -> str:
        v = row.get(name, "")
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ChannelListError(f"column {name} is not a string", body)
        return v
    return get


@dataclass(frozen=True)
class Resume:
    """Resume (take over) ``record`` on ``channel``; ``owner`` is the lease holder seen (or
    None)."""

    record: CallRecord
    channel: FsChannel
    owner: str | None


@dataclass(frozen=True)
class Skip:
    uuid: str
    reason: str


@dataclass(frozen=True)
class ReconcilePlan:
    close: tuple[CallRecord, ...] = ()
    resume: tuple[Resume, ...] = ()
    end: tuple[FsChannel, ...] = ()
    skip: tuple[Skip, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.close or self.resume or self.end)


def plan_reconciliation(node_id: str, stored: Iterable[CallRecord],
                        owners: Mapping[str, str | None], channels: Iterable[FsChannel],
                        live_nodes: Collection[str] = (),
                        our_apps: Collection[str] = OUR_APPS) -> ReconcilePlan:
    """Decide, without I/O, what to do with each call (see the module docstring).

    ``stored``: the store's records for the uuids involved (active ones, plus any ended record
    for a channel FreeSWITCH still has); ``owners``: lease holder per uuid (missing = None);
    ``live_nodes``: nodes with a live heartbeat (a lease of a node not in it still counts
    while it lasts: leases are the authority, heartbeats only explain)."""
    records = {r.uuid: r for r in stored}
    fs = {c.uuid: c for c in channels}
    resume: list[Resume] = []
    end: list[FsChannel] = []
    skip: list[Skip] = []
    # Calls of other nodes that this switch does not carry are none of our business.
    close = [r for u, r in sorted(records.items())
             if u not in fs and not r.ended and r.node == node_id]
    for uuid, ch in sorted(fs.items()):
        rec = records.get(uuid)
        holder = owners.get(uuid)
        if ch.direction and ch.direction != "inbound":
            skip.append(Skip(uuid, f"{ch.direction} leg"))
        elif rec is not None and rec.ended:
            skip.append(Skip(uuid, f"ended in the store ({rec.end_cause or rec.state})"))
        elif holder is not None and holder != node_id:
            alive = "live" if holder in live_nodes else "no heartbeat"
            skip.append(Skip(uuid, f"lease held by node {holder!r} ({alive})"))
        elif rec is not None:
            resume.append(Resume(rec, ch, holder))
        elif ch.application in our_apps:
            end.append(ch)
        else:
            skip.append(Skip(uuid, f"not ours: application {ch.application!r}"))
    return ReconcilePlan(tuple(close), tuple(resume), tuple(end), tuple(skip))


def reconcile(store: SessionStore, node_id: str, channels: Sequence[FsChannel],
              our_apps: Collection[str] = OUR_APPS) -> ReconcilePlan:
    """Read the store (active calls, records and leases of the channels' uuids, live nodes)
    and plan. Raises StoreUnavailable if Redis does not answer; the daemon then starts
    without reconciling and retries later."""
    stored = {r.uuid: r for r in store.active_calls()}
    for ch in channels:
        if ch.uuid not in stored:
            found = store.get_call(ch.uuid)
            if found is not None:
                stored[ch.uuid] = found
    uuids = set(stored) | {c.uuid for c in channels}
    owners = {u: store.owner(u) for u in sorted(uuids)}
    live = {n.node_id for n in store.nodes()}
    return plan_reconciliation(node_id, stored.values(), owners, channels, live, our_apps)
