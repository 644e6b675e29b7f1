"""Start-up reconciliation, the daemon side: execute the store's ``ReconcilePlan``.

How this works: once the control connection is up (and before READY) the daemon calls
``Recovery.run()``: ``api show channels as json`` → ``parse_channels`` → ``reconcile(store,
node_id, channels)`` → each decision is carried out and logged on one line
(``reconcile.<action>``), then one ``reconcile.summary`` line:

==========  ==================================================================================
``close``   the store's live calls of this node that FreeSWITCH no longer has: written ended
            with cause ``LOST_ON_RESTART``, lease released.
``resume``  a channel with live state whose lease is free, lapsed or ours: we take the lease
            (``takeover_if_expired``). A channel that sits in ``park``, or in the dialplan's
            hold prompt (``playback``: the fallback chain after the old daemon went away), is
            sent to our socket at once (``uuid_transfer <uuid> 'socket:HOST:PORT async full'
            inline``): the caller waits for the restart, not for the rest of the prompt.
            Others (e.g. between two dialplan steps) come back by themselves. A call that
            has not reached us after
            ``daemon.resume_grace_s`` is sent there too, or hung up
            (``uuid_kill <uuid> NORMAL_TEMPORARY_FAILURE``) if that fails: none is left in
            dead air.
``end``     channels in/around our socket app with no state anywhere: after
            ``daemon.resume_grace_s`` (a call that is just now being connected to us must not
            be cut), those still not driven by anyone are hung up with ``uuid_kill``.
``skip``    left alone (another live node's lease, ended in the store, outbound legs, other
            applications); also every channel this daemon already drives.
==========  ==================================================================================

Contract: never raises; a store or switch that does not answer makes the run log
``reconcile.failed`` and return None; it is retried ``RETRIES`` times every ``RETRY_S``
seconds (the daemon goes on meanwhile; calls still re-enter and resume by lease). The first
run is in the daemon's main greenlet, bounded by the store and ESL timeouts; retries and the
follow-up after the grace period run in their own greenlets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

import gevent

from callctl.config import Config
from callctl.esl.adapter import EslError
from callctl.log import get_logger
from callctl.metrics import Metrics
from callctl.ownership import Ownership
from callctl.store import (
    LOST_CAUSE,
    ChannelListError,
    FsChannel,
    ReconcilePlan,
    SessionStore,
    StoreError,
    parse_channels,
    reconcile,
)

KILL_CAUSE = "NORMAL_TEMPORARY_FAILURE"
#: Applications a resumable channel is taken out of at once (park; the hold prompt).
SEND_NOW = frozenset({"park", "playback"})
#: A run that could not read the store or the channel list is retried this often, this long
#: after (in its own greenlet; the daemon is READY meanwhile: calls still resume by lease).
RETRIES = 5
RETRY_S = 5.0


class Recovery:
    """Carries out start-up reconciliation for one daemon (module docstring).

    ``api`` runs one FreeSWITCH API command and returns its body (the control connection's
    ``api``); ``driving`` tells whether this daemon already drives a call (its registry);
    ``socket_address()`` is ``HOST:PORT`` of our outbound ESL server. ``ran`` is True once
``run`` was called.
    """

    def __init__(self, cfg: Config, store: SessionStore, ownership: Ownership,
                 api: Callable[[str], str], driving: Callable[[str], bool],
                 socket_address: Callable[[], str], metrics: Metrics) -> None:
        self.cfg = cfg
        self.store = store
        self.ownership = ownership
        self.api = api
        self.driving = driving
        self.socket_address = socket_address
        self.metrics = metrics
        self.node_id = cfg.daemon.node_id
        self.log = get_logger(component="reconcile", node=self.node_id)
        self.follow_up: gevent.Greenlet[Any, Any] | None = None
        self.ran = False
        self.attempts = 0
        #: Decisions carried out by the last ``run`` (what ``reconcile.summary`` logs).
        self.counts: dict[str, int] = {}

    def channels(self) -> list[FsChannel]:
        """FreeSWITCH's channels now. Raises EslError / ChannelListError."""
        return parse_channels(self.api("show channels as json"))

    def run(self) -> ReconcilePlan | None:
        """Plan and execute once (module docstring). None if it could not run."""
        self.ran = True
        self.counts = {"close": 0, "resume": 0, "end": 0, "skip": 0}
        try:
            plan = reconcile(self.store, self.node_id, self.channels())
        except (EslError, ChannelListError, StoreError) as e:
            self.attempts += 1
            again = self.attempts < RETRIES
            self.log.error("reconcile.failed", error=str(e)[:300], attempt=self.attempts,
                           retry_in_s=RETRY_S if again else None)
            if again:
                self.follow_up = gevent.spawn_later(RETRY_S, self.run)
            return None
        later_resume: list[str] = []
        later_end: list[str] = []
        for rec in plan.close:
            self._count("close")
            self.store.call_ended(dataclasses.replace(rec, end_cause=LOST_CAUSE))
            self.ownership.release(rec.uuid)
            self.log.info("reconcile.close", call_uuid=rec.uuid, flow_node=rec.flow_node,
                          reason="FreeSWITCH no longer has the call")
        for r in plan.resume:
            uuid = r.channel.uuid
            if self.driving(uuid):
                self._skip(uuid, "already driven by this daemon")
                continue
            try:
                ours = self.store.takeover_if_expired(uuid, self.node_id,
                                                      self.cfg.store.lease_s)
            except StoreError as e:
                self._skip(uuid, f"store: {e}")
                continue
            if not ours:
                self._skip(uuid, "another node took the lease")
                continue
            self._count("resume")
            self.ownership.hold(uuid, lambda: None)
            if r.channel.application in SEND_NOW:
                how = "sent to our socket" if self._to_socket(uuid) else "transfer failed"
            else:
                how = f"waiting for the dialplan to re-enter (in {r.channel.application!r})"
            # checked again after the grace period either way: a caller who hangs up on the
            # way to our socket never reaches a session that would release the lease
            later_resume.append(uuid)
            self.log.info("reconcile.resume", call_uuid=uuid, flow_node=r.record.flow_node,
                          previous_owner=r.owner, action=how)
        for ch in plan.end:
            if self.driving(ch.uuid) or ch.uuid in self.ownership:
                self._skip(ch.uuid, "already driven by this daemon")
                continue
            self._count("end")
            later_end.append(ch.uuid)
            self.log.info("reconcile.end", call_uuid=ch.uuid, application=ch.application,
                          action=f"hang up after {self.cfg.daemon.resume_grace_s} s unless "
                                 "it reaches a daemon")
        for s in plan.skip:
            self._skip(s.uuid, s.reason)
        self.log.info("reconcile.summary", **self.counts)
        if later_resume or later_end:
            self.follow_up = gevent.spawn_later(self.cfg.daemon.resume_grace_s,
                                                self.finish, later_resume, later_end)
        return plan

    def finish(self, resume: Collection[str], end: Collection[str]) -> None:
        """After the grace period: calls still not driven by us are sent to our socket
        (``resume``) or hung up (``end``, or a failed transfer)."""
        try:
            present = {c.uuid for c in self.channels()}
        except (EslError, ChannelListError) as e:
            self.log.error("reconcile.follow_up_failed", error=str(e)[:300])
            return
        for uuid in resume:
            if self.driving(uuid):
                continue
            if uuid not in present:
                self.ownership.release(uuid)
                self.log.info("reconcile.gone", call_uuid=uuid)
                continue
            if not self._to_socket(uuid):
                self._kill(uuid)
        for uuid in end:
            if uuid in present and not self.driving(uuid) and uuid not in self.ownership \
                    and self._unowned(uuid):
                self._kill(uuid)

    # -- helpers ------------------------------------------------------------------------------

    def _unowned(self, uuid: str) -> bool:
        try:
            return self.store.owner(uuid) is None
        except StoreError:
            return True

    def _to_socket(self, uuid: str) -> bool:
        try:
            self.api(f"uuid_transfer {uuid} 'socket:{self.socket_address()} async full' inline")
            return True
        except EslError as e:
            self.log.warning("reconcile.transfer_failed", call_uuid=uuid, error=str(e)[:200])
            return False

    def _kill(self, uuid: str) -> None:
        self.ownership.release(uuid)
        try:
            self.api(f"uuid_kill {uuid} {KILL_CAUSE}")
            self.log.info("reconcile.killed", call_uuid=uuid, cause=KILL_CAUSE)
        except EslError as e:
            self.log.warning("reconcile.kill_failed", call_uuid=uuid, error=str(e)[:200])

    def _skip(self, uuid: str, reason: str) -> None:
        self._count("skip")
        self.log.info("reconcile.skip", call_uuid=uuid, reason=reason)

    def _count(self, action: str) -> None:
        self.counts[action] = self.counts.get(action, 0) + 1
        self.metrics.reconciled.labels(action=action).inc()
