"""Redis key names of the session store, in one place.

Every key starts with a namespace (``store.namespace``, default ``callctl``) so that several
deployments, or several tests, can share one Redis. With the default namespace:

=================================  ======  ===================================================
key                                type    contents and lifetime
=================================  ======  ===================================================
``callctl:call:<uuid>``            hash    the call (``CallRecord.to_hash()``): node, state,
                                           caller, did, route, timestamps, flow position,
                                           dialog state, LLM history. Expires
                                           ``store.retention_s`` after its last write (so
                                           an ended call lives that long; a live call is
                                           rewritten at least every turn).
``callctl:call:<uuid>:turns``      list    one JSON ``TurnRecord`` per turn (transcript as
                                           ``store.transcripts`` allows, hop timings). Same
                                           expiry as the hash; trimmed to ``MAX_TURNS``.
``callctl:call:<uuid>:owner``      string  the node id that drives the call; a lease set with
                                           ``SET NX PX`` and renewed by its owner; released by
                                           compare-and-delete.
``callctl:calls:active``           set     uuids of calls not yet ended, across all nodes.
                                           Members whose hash has expired are pruned on read.
``callctl:node:<id>``              string  JSON heartbeat of a live node; ``EX`` =
                                           ``store.heartbeat_ttl_s``, so a dead node vanishes.
``callctl:events``                 stream  ``call_started``, ``answered``, ``turn``,
                                           ``transferred``, ``ended`` records for CDR and
                                           analytics; ``XADD MAXLEN ~ store.events_maxlen``.
=================================  ======  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass

#: Longest turn list kept per call (oldest turns are trimmed beyond this).
MAX_TURNS = 2000


@dataclass(frozen=True)
class Keys:
    """Key names under one namespace. ``Keys("callctl").call("u1") == "callctl:call:u1"``."""

    namespace: str = "callctl"

    def __post_init__(self) -> None:
        if not self.namespace or any(c in self.namespace for c in " *?[]"):
            raise ValueError(f"store namespace {self.namespace!r}: must be non-empty, "
                             "without spaces or glob characters")

    def call(self, uuid: str) -> str:
        return f"{self.namespace}:call:{uuid}"

    def turns(self, uuid: str) -> str:
        return f"{self.namespace}:call:{uuid}:turns"

    def owner(self, uuid: str) -> str:
        return f"{self.namespace}:call:{uuid}:owner"

    @property
    def active(self) -> str:
        return f"{self.namespace}:calls:active"

    def node(self, node_id: str) -> str:
        return f"{self.namespace}:node:{node_id}"

    @property
    def node_pattern(self) -> str:
        """``SCAN MATCH`` pattern of every node heartbeat key."""
        return f"{self.namespace}:node:*"

    def node_id_of(self, key: str) -> str:
        """The node id in a heartbeat key (inverse of ``node()``)."""
        return key[len(self.namespace) + len(":node:"):]

    @property
    def events(self) -> str:
        return f"{self.namespace}:events"
