"""Every Prometheus metric callctl exports, built on an injected registry.

Contract: construct ``Metrics(registry)`` once per daemon (tests pass a fresh
``CollectorRegistry``). Names carry units (``_seconds``, ``_total``, ``_ratio``); labels come
from closed sets only (hop names, route names from config, engine names, outcomes, hangup
causes) and never a call uuid or a phone number. Current-state gauges (active calls by state)
are read at scrape time through ``set_state_source``.

The registry also gets prometheus_client's process collector (``process_resident_memory_bytes``,
``process_cpu_seconds_total``, ``process_open_fds``, …, read from /proc at scrape time) and
platform collector (``python_info``): a fresh registry has neither, unlike the library's
global one. ``callctl_build_info{version,commit}`` is 1 for the running build; the commit is
read once, at construction, from the git checkout callctl runs from (``build_commit``), else
``unknown``. ``callctl_max_calls`` is the capacity (``daemon.max_calls``), set by the daemon
at start-up and on each SIGHUP reload.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from callctl import __version__

# 5 ms .. 4 s, dense in the 50 ms - 2 s range that matters for turn-taking.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4,
    0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0,
)

#: Closed set of hop names on a call's timeline (see DESIGN.md §2).
HOPS = (
    "endpoint",         # speech end -> endpoint decision
    "asr_final",        # endpoint decision (or speech end) -> final transcript
    "dialog",           # final transcript -> reply decided
    "tts_first_chunk",  # reply decided -> first audio ready
    "playback_start",   # first audio ready -> playback command sent
    "play_out",         # playback command sent -> audio started at the switch
)


_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
#: Where a checkout of callctl keeps ``.git`` (the parent of the package directory).
CHECKOUT = Path(__file__).resolve().parent.parent


def build_commit(root: Path = CHECKOUT) -> str:
    """The commit (12 hex digits) checked out at ``root``, read from ``.git`` without running
    git (HEAD, a loose ref or packed-refs; a worktree's ``.git`` file is followed);
    ``"unknown"`` when there is no checkout (an installed package) or it cannot be read."""
    git = root / ".git"
    try:
        if git.is_file():                       # worktree / submodule: "gitdir: <path>"
            text = git.read_text().strip()
            if not text.startswith("gitdir:"):
                return "unknown"
            git = (root / text.removeprefix("gitdir:").strip()).resolve()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        sha = (git / "HEAD").read_text().strip()
        if sha.startswith("ref:"):
            ref = sha.removeprefix("ref:").strip()
            loose = [p for p in (git / ref, common / ref) if p.is_file()]
            if loose:
                sha = loose[0].read_text().strip()
            else:
                packed = common / "packed-refs"
                lines = packed.read_text().splitlines() if packed.is_file() else []
                sha = next((ln.split(" ", 1)[0] for ln in lines
                            if ln.endswith(" " + ref)), "")
    except (OSError, UnicodeDecodeError):
        return "unknown"
    return sha[:12] if _SHA.fullmatch(sha) else "unknown"


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("callctl_calls_active", "Calls in progress by state.",
                              labels=["state"])
        if self.source is not None:
            for state, n in sorted(self.source().items()):
                g.add_metric([state], n)
        yield g


class Metrics:
    """All metrics, as attributes. One instance per process (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 version: str | None = None, commit: str | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.build_info = Info(
            "callctl_build", "The running callctl: version and git commit (or unknown).",
            registry=r)
        self.build_info.info({"version": version or __version__,
                              "commit": commit or build_commit()})
        self.max_calls = Gauge(
            "callctl_max_calls", "Capacity: calls this node takes at most (daemon.max_calls).",
            registry=r)
        self.turn_latency = Histogram(
            "callctl_turn_latency_seconds",
            "Caller speech end to first reply audio at the switch.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.hop = Histogram(
            "callctl_hop_seconds", "Time spent in one hop of a turn.",
            ["hop"], buckets=LATENCY_BUCKETS, registry=r)
        self.bargein_latency = Histogram(
            "callctl_bargein_latency_seconds",
            "Caller speech onset over the bot to playback stopped.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.bargeins = Counter(
            "callctl_bargeins_total",
            "Barge-ins by kind: speech, dtmf (the bot was cut), false (cut, then the sentence "
            "said again), paused (pause-then-decide paused the bot), unpaused (it went on).",
            ["kind"], registry=r)
        self.answer_to_first_audio = Histogram(
            "callctl_answer_to_first_audio_seconds", "Call answered to first bot audio.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.calls = Counter(
            "callctl_calls_total", "Calls ended, by route, outcome and hangup cause.",
            ["route", "outcome", "cause"], registry=r)
        self.calls_rejected = Counter(
            "callctl_calls_rejected_total", "Calls refused before answer.",
            ["reason"], registry=r)
        self.esl_connected = Gauge(
            "callctl_esl_connected", "1 while the inbound control connection is up.",
            registry=r)
        self.esl_command_latency = Histogram(
            "callctl_esl_command_seconds", "ESL command round trip.",
            ["command"], buckets=LATENCY_BUCKETS, registry=r)
        self.esl_reconnects = Counter(
            "callctl_esl_reconnects_total", "Control connection reconnects.", registry=r)
        self.inbox_dropped = Counter(
            "callctl_inbox_dropped_total",
            "Control messages a call's full inbox dropped, by message class.",
            ["kind"], registry=r)
        self.audio_frames_dropped = Counter(
            "callctl_audio_frames_dropped_total", "Audio frames dropped (inbox overflow).",
            registry=r)
        self.protocol_errors = Counter(
            "callctl_protocol_errors_total", "Bad input from a peer, by source and kind.",
            ["source", "kind"], registry=r)
        self.ws_rejected = Counter(
            "callctl_ws_rejected_total", "Refused fork WebSocket connections, by reason.",
            ["reason"], registry=r)
        self.store_queue_depth = Gauge(
            "callctl_store_queue_depth", "Writes waiting for Redis.", registry=r)
        self.store_writes_lost = Counter(
            "callctl_store_writes_lost_total", "Store writes dropped (queue full or Redis down).",
            registry=r)
        self.store_up = Gauge(
            "callctl_store_up", "1 while the session store answers.", registry=r)
        self.call_leases = Counter(
            "callctl_call_leases_total",
            "Call ownership decisions: owned, resumed, refused (another node holds the call), "
            "unleased (store down: the call goes on without a lease), lost (taken over).",
            ["outcome"], registry=r)
        self.reconciled = Counter(
            "callctl_reconciled_calls_total",
            "Start-up reconciliation decisions: close, resume, end, skip.",
            ["action"], registry=r)
        self.asr_rtf = Histogram(
            "callctl_asr_real_time_factor_ratio", "Decode time / audio time per utterance.",
            ["engine"], buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 4),
            registry=r)
        self.tts_rtf = Histogram(
            "callctl_tts_real_time_factor_ratio", "Synthesis time / audio time per sentence.",
            ["engine"], buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 4),
            registry=r)
        self.tts_cache = Counter(
            "callctl_tts_cache_total", "Prompt cache lookups by result (hit, miss).",
            ["result"], registry=r)
        self.engine_failures = Counter(
            "callctl_engine_failures_total", "ASR/TTS/LLM failures by engine.",
            ["engine"], registry=r)
        self.recognizers_created = Counter(
            "callctl_asr_recognizers_created_total", "Recognizers created (pool misses).",
            ["engine"], registry=r)
        self.recognizers_reused = Counter(
            "callctl_asr_recognizers_reused_total", "Recognizers taken warm from the pool.",
            ["engine"], registry=r)
        self.decode_wait = Histogram(
            "callctl_asr_decode_wait_seconds",
            "Time a recognizer job waited for a decode slot (asr.decode_threads), by priority: "
            "urgent = a turn's end, routine = streaming catch-up. Growing waits = CPU-bound.",
            ["priority"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r)
        self.recognizers_primed = Counter(
            "callctl_asr_recognizers_primed_total",
            "Pooled recognizers given their costly first utterance after start-up.",
            ["engine"], registry=r)
        self.playback_marks_missing = Counter(
            "callctl_playback_marks_missing_total",
            "Streamed replies ended by the mark-wait bound: some playout marks never came back "
            "(routine right after a killAudio; every reply of a call = the caller hears none).",
            registry=r)
        self.playback_fallbacks = Counter(
            "callctl_playback_fallbacks_total",
            "Calls switched from stream to file playback, by reason: no_idle_frames (the "
            "channel writes no frames to play the stream into), marks_missing (no playout "
            "mark of the call ever came back).",
            ["reason"], registry=r)
        self.ready = Gauge(
            "callctl_ready", "1 while the daemon takes calls.", registry=r)
        self._states = _StateCollector()
        r.register(self._states)

    def set_state_source(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Register the function read at scrape time for ``callctl_calls_active{state}``."""
        self._states.source = source

    def observe_hop(self, hop: str, seconds: float) -> None:
        """Record one hop; ``hop`` must be one of ``HOPS``."""
        if hop not in HOPS:
            raise ValueError(f"unknown hop {hop!r}; allowed: {', '.join(HOPS)}")
        self.hop.labels(hop=hop).observe(max(0.0, seconds))
