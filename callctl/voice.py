"""``Voice``: the engines every call of one daemon shares, and the daemon's conversation factory.

Contract: ``make_factory(cfg, metrics, config_path)`` is the daemon's hook
(``callctl.daemon``); it returns a ``Voice``, a ``ConversationFactory`` with a lifecycle.
``Voice.start()`` (blocking, before the daemon says READY) binds the mod_audio_fork WebSocket
server, opens the store, deletes reply files a crashed daemon left in ``playback.dir``, loads
the recognizer model, pre-renders every static prompt of every flow (and the resume prompt)
and warms a pool of VADs. After READY, with ``asr.prime``, a background greenlet decodes a
synthesized sentence through every pooled recognizer, so no caller's first turn pays a fresh
recognizer's first-utterance cost. For each answered call the ``CallSession`` asks ``Voice``
for a ``Conversation`` (``Voice(call)``); ``close()`` stops the fork server, the store and the
webhooks' threads. Besides the fork server and the store, ``Voice`` holds the recognizer
engine and its ``DecodeScheduler``, the ``Speaker`` (TTS + prompt cache), the flows
(``Dialogs``), the endpointing policy and the turn model (``turns.turn_model_path``, loaded
at start-up, one for all calls; a configured file that is missing or broken stops the
start-up with one line), the VAD pool and the webhooks' own threadpool
(``callctl.dialog.webhook``). A subclass may return another ``Conversation`` subclass from
``__call__`` (``callctl.bench.baseline``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gevent
from gevent.threadpool import ThreadPool

from callctl.asr.base import Engine
from callctl.asr.scheduler import DecodeScheduler
from callctl.call.session import CallSession
from callctl.config import Config
from callctl.conversation import Conversation
from callctl.dialog import Dialogs
from callctl.dialog.webhook import WEBHOOK_THREADS
from callctl.log import get_logger
from callctl.media.forkserver import ForkServer
from callctl.media.smart_turn import AUTO, MODEL_FILE, MODEL_NAME, SmartTurn, load_turn_model
from callctl.media.vad import Vad
from callctl.metrics import Metrics
from callctl.store import SessionStore, open_store
from callctl.tts import build_speaker
from callctl.tts.base import resample
from callctl.tts.speaker import Speaker
from callctl.turns import EndpointPolicy

#: Synthesized after start-up and decoded once by each pooled recognizer (``asr.prime``).
PRIME_TEXT = ("Hello, I would like to check my account balance and talk to someone about "
              "my last bill, please.")
PRIME_TIMEOUT_S = 60.0
VAD_WARM_MAX = 16     # VADs built at start-up (at most daemon.max_calls)
PLAYBACK_STALE_S = 600  # start-up: reply files older than this were left by a crash


class Voice:
    """Engines shared by all calls of one daemon, and the ``ConversationFactory``."""

    def __init__(self, cfg: Config, metrics: Metrics, config_path: str | None = None,
                 flows_dir: str | Path | None = None, store: SessionStore | None = None,
                 asr: Engine | None = None, speaker: Speaker | None = None,
                 turn_model: SmartTurn | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.log = get_logger(component="voice")
        self.rate = cfg.media.sample_rate
        self.forks = ForkServer.from_config(cfg.media, metrics)
        self.dialogs = Dialogs(cfg, config_path=config_path, directory=flows_dir)
        self.store = store if store is not None else open_store(cfg.store, metrics)
        self.asr = asr
        self.speaker = speaker if speaker is not None else build_speaker(
            cfg.tts, self.rate, metrics)
        self.policy = EndpointPolicy.from_config(cfg.turns)
        self.turn_model = turn_model
        self.playback_dir = Path(cfg.playback.dir)
        self.loaded = False
        self._vads: list[Vad] = []     # idle, reset VADs (at most daemon.max_calls)
        self.webhooks = ThreadPool(WEBHOOK_THREADS)
        self.vads_created = 0
        self.vads_reused = 0
        self._primer: gevent.Greenlet[Any, Any] | None = None
        self.decoder = DecodeScheduler(cfg.asr.decode_threads, metrics)

    def start(self) -> None:
        """Bind the fork server, open the store, load models, pre-render prompts (blocking)."""
        self.forks.start()
        if self.cfg.media.listen_port == 0:        # tests and the demo: an ephemeral port
            host, port = self.forks.address
            self.forks.public_url = f"ws://{host}:{port}"
        self.store.start()
        swept = sweep_playback_dir(self.playback_dir)
        if swept:
            self.log.info("voice.playback_swept", files=swept, dir=str(self.playback_dir))
        t0 = time.monotonic()
        if self.asr is None:
            from callctl.asr import build_engine

            self.asr = build_engine(self.cfg.asr, self.metrics, self.rate)
        if self.turn_model is None:
            self.turn_model = load_turn_model(self.cfg)      # TurnModelError: not here
            if self.turn_model is None and self.cfg.turns.turn_model_path == AUTO:
                self.log.warning(
                    "voice.turn_model_off", path=str(Path(self.cfg.asr.models_dir) / MODEL_FILE),
                    why=f"not installed: run `callctl models fetch {MODEL_NAME}` (or set "
                        "turns.turn_model_path = \"\" to silence this)")
        prompts = [*self.dialogs.static_prompts(),
                   *([self.cfg.dialog.resume_prompt] if self.cfg.dialog.resume_prompt else [])]
        counts = self.speaker.prepare(prompts)
        while len(self._vads) < min(self.cfg.daemon.max_calls, VAD_WARM_MAX):
            self.vads_created += 1
            self._vads.append(Vad.from_config(self.cfg.vad, self.rate, self._engine_name()))
        self.loaded = True
        if self.cfg.asr.prime and hasattr(self.asr, "prime"):
            self._primer = gevent.spawn(self._prime_recognizers)
        self.log.info("voice.ready", asr=type(self.asr).__name__, tts=self.cfg.tts.engine,
                      turn_model=str(self.turn_model.path) if self.turn_model else "off",
                      prompts=len(prompts), rendered=counts, fork_port=self.forks.address[1],
                      took_s=round(time.monotonic() - t0, 2))

    def ready(self) -> bool:
        return self.loaded

    def wait_primed(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) for the background priming to end; True when it has
        ended or none runs (``asr.prime`` off, or an engine without priming)."""
        if self._primer is None:
            return True
        self._primer.join(timeout=timeout_s)
        return bool(self._primer.dead)

    def _prime_recognizers(self) -> None:
        """Background, after READY: synthesize ``PRIME_TEXT`` and let the engine decode it
        through every pooled recognizer, one at a time (``VoskEngine.prime``), so no caller's
        first turn pays a fresh recognizer's first-utterance cost. A failure costs latency,
        never a call or the start-up."""
        t0 = time.monotonic()
        ahead = self.speaker.prerender(PRIME_TEXT)
        try:
            if not ahead.wait(PRIME_TIMEOUT_S) or not ahead.chunks:
                self.log.warning("voice.prime_skipped", why="prime text not synthesized")
                return
            rate = getattr(self.asr, "sample_rate", self.rate)
            pcm = b"".join(c.pcm if c.rate == rate else resample(c.samples, c.rate, rate)
                           for c in ahead.chunks)
            primed = self.asr.prime(pcm, scheduler=self.decoder)  # type: ignore[union-attr]
        except Exception as e:
            self.log.warning("voice.prime_failed", error=repr(e)[:200])
            return
        finally:
            ahead.cancel()
        self.metrics.recognizers_primed.labels(engine=self.cfg.asr.engine).inc(primed)
        self.log.info("voice.recognizers_primed", recognizers=primed,
                      took_s=round(time.monotonic() - t0, 2))

    def _engine_name(self) -> str:
        """The recognizer in use (an engine handed in may differ from ``asr.engine``)."""
        return str(getattr(self.asr, "name", self.cfg.asr.engine))

    def acquire_vad(self) -> Vad:
        """A reset VAD for one call: from the pool, else built in the hub's threadpool (the
        Silero model takes ~100 ms to load: never on the hub). Give it back with
        ``release_vad`` once nothing feeds it any more."""
        if self._vads:
            self.vads_reused += 1
            return self._vads.pop()
        self.vads_created += 1
        vad: Vad = gevent.get_hub().threadpool.apply(
            Vad.from_config, (self.cfg.vad, self.rate, self._engine_name()))
        return vad

    def release_vad(self, vad: Vad) -> None:
        """Reset ``vad`` and keep it for the next call (up to ``daemon.max_calls`` idle)."""
        vad.reset()
        if len(self._vads) < self.cfg.daemon.max_calls:
            self._vads.append(vad)

    def close(self) -> None:
        if self._primer is not None:
            self._primer.kill(block=True, timeout=1.0)
        self.forks.stop()
        self.store.close()
        self.webhooks.kill()

    def __call__(self, call: CallSession) -> Conversation:
        if self.asr is None:
            raise RuntimeError("Voice.start() was not called")
        return Conversation(self, call)


def sweep_playback_dir(root: Path, older_than_s: float = PLAYBACK_STALE_S) -> int:
    """Delete reply files a crashed daemon left in ``playback.dir`` (a live call's files are
    deleted when played): every ``.tmp-*`` (a write cut short) and every file older than
    ``older_than_s``. Returns how many were deleted; never raises (a missing dir is fine)."""
    cutoff = time.time() - older_than_s
    n = 0
    try:
        paths = [p for p in root.rglob("*") if p.is_file()]
    except OSError:
        return 0
    for path in paths:
        try:
            if path.name.startswith(".tmp-") or path.stat().st_mtime < cutoff:
                path.unlink()
                n += 1
        except OSError:
            pass
    return n


def make_factory(cfg: Config, metrics: Metrics, config_path: str | None = None) -> Voice:
    """The daemon's hook (see ``callctl.daemon``)."""
    return Voice(cfg, metrics, config_path=config_path)
