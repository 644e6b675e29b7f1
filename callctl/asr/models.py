"""`callctl models list|fetch|verify`: named production models, fetched only on request.

How this works: ``CATALOG`` names the models an operator may want: Vosk models with the
official alphacephei.com URL, the archive's size and, where it is published, its sha256; and
the Smart Turn v3.2 end-of-turn model (``turns.turn_model_path``), one file taken out of the
``pipecat-ai`` wheel on PyPI (``member``) without installing pipecat: the wheel is checked
against its PyPI sha256, the ``.onnx`` against its own, and only that file is written to
``<models_dir>/<file>``. For a Vosk model, ``fetch``
downloads the zip into ``asr.models_dir`` (a ``.part`` file, progress bar on stderr), checks
the sha256 (or, when none is known, prints the one it computed and records it next to the
model so ``verify`` can check it later), unzips into ``<models_dir>/<name>`` through a
temporary directory and checks the result is a Vosk model. No network access happens
anywhere else in callctl: models are never fetched implicitly. ``--url``/``--sha256`` allow an
internal mirror.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from callctl.asr.base import AsrModelError, require_model_files

VOSK_FILES = ("am/final.mdl", "conf/model.conf")


class ModelFetchError(RuntimeError):
    """Download, checksum or unpack failed; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    url: str
    size_mb: int
    sha256: str | None
    note: str
    member: str | None = None         # a single file taken out of the archive ...
    member_sha256: str | None = None  # ... with this sha256 ...
    file: str | None = None           # ... written as <models_dir>/<file>

    @property
    def installed_name(self) -> str:
        return self.file or self.name


_BASE = "https://alphacephei.com/vosk/models/"
CATALOG: dict[str, ModelInfo] = {m.name: m for m in (
    ModelInfo("vosk-model-small-en-us-0.15", _BASE + "vosk-model-small-en-us-0.15.zip", 40,
              "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
              "US English, small: lowest CPU and memory, the usual choice per call"),
    ModelInfo("vosk-model-en-us-0.22-lgraph", _BASE + "vosk-model-en-us-0.22-lgraph.zip", 128,
              None, "US English, big acoustic model with a small graph: better WER"),
    ModelInfo("vosk-model-en-us-0.22", _BASE + "vosk-model-en-us-0.22.zip", 1800, None,
              "US English, large (server class, several GB of RAM)"),
    ModelInfo("vosk-model-small-en-in-0.4", _BASE + "vosk-model-small-en-in-0.4.zip", 36,
              None, "Indian English, small"),
    ModelInfo("smart-turn-v3.2",
              "https://files.pythonhosted.org/packages/38/31/29c72ca8d3a16b59fd12580fcb99a7"
              "cef641d9ee07fe7b0321c1b65ca3cf/pipecat_ai-1.14.0-py3-none-any.whl", 12,
              "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
              "end-of-turn model (turns.turn_model_path), BSD-2-Clause, from the "
              "pipecat-ai 1.14.0 wheel",
              member="pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
              member_sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
              file="smart-turn-v3.2-cpu.onnx"),
)}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _progress(done: int, total: int | None, out: IO[str]) -> None:
    if total:
        pct = done / total
        bar = "#" * int(pct * 40)
        out.write(f"\r[{bar:<40}] {pct:6.1%} {done / 1e6:8.1f} MB")
    else:
        out.write(f"\r{done / 1e6:8.1f} MB")
    out.flush()


def download(url: str, dest: Path, timeout: float = 30.0, out: IO[str] = sys.stderr) -> None:
    """Stream ``url`` into ``dest`` with a progress bar. Raises ``ModelFetchError``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                done += len(chunk)
                _progress(done, total, out)
            out.write("\n")
            if total is not None and done != total:
                raise ModelFetchError(f"download of {url} stopped at {done} of {total} bytes")
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise ModelFetchError(
            f"cannot download {url}: {reason}. No network here? Fetch it on a machine that "
            f"has access (or use --url with a mirror) and copy the unzipped directory into "
            f"the models directory.") from e


def fetch_member(info: ModelInfo, models_dir: Path, out: IO[str] = sys.stderr) -> Path:
    """Download the archive of ``info``, check it, and write only its ``member`` (checked
    too) to ``models_dir/info.file``; returns that path. An installed file is verified."""
    assert info.member is not None and info.file is not None
    target = models_dir / info.file
    if target.exists():
        out.write(verify_file(target, info) + "\n")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    part = models_dir / f".{info.name}.archive.part"
    tmp = models_dir / f".{info.file}.part"
    try:
        download(info.url, part, out=out)
        digest = sha256_of(part)
        if info.sha256 is not None and digest != info.sha256:
            raise ModelFetchError(f"checksum mismatch for {info.url}: got sha256 {digest}, "
                                  f"expected {info.sha256}; the file was removed")
        try:
            with zipfile.ZipFile(part) as z, z.open(info.member) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except KeyError as e:
            raise ModelFetchError(f"{info.url} has no {info.member}") from e
        except zipfile.BadZipFile as e:
            raise ModelFetchError(f"{info.url} is not a zip archive: {e}") from e
        got = sha256_of(tmp)
        if info.member_sha256 is not None and got != info.member_sha256:
            raise ModelFetchError(f"checksum mismatch for {info.member} in {info.url}: got "
                                  f"sha256 {got}, expected {info.member_sha256}")
        tmp.replace(target)
        return target
    finally:
        part.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def verify_file(path: Path, info: ModelInfo) -> str:
    """Check a single-file model against the catalog's sha256; returns a one-line summary."""
    if not path.is_file():
        raise ModelFetchError(f"{path} does not exist (run `callctl models fetch {info.name}`)")
    digest = sha256_of(path)
    if info.member_sha256 is not None and digest != info.member_sha256:
        raise ModelFetchError(f"{path}: sha256 {digest} is not {info.name}'s "
                              f"({info.member_sha256}); fetch it again")
    return f"{path}: {info.name} OK, {path.stat().st_size / 1e6:.1f} MB, sha256 {digest[:16]}…"


def fetch(info: ModelInfo, models_dir: Path, out: IO[str] = sys.stderr) -> Path:
    """Download, check and unpack ``info`` into ``models_dir/info.name``; returns the path.
    A single-file model (``info.member``) goes through ``fetch_member``."""
    if info.member is not None:
        return fetch_member(info, models_dir, out)
    target = models_dir / info.name
    if target.exists():
        verify(target)
        out.write(f"{info.name}: already in {target}\n")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    part = models_dir / f".{info.name}.zip.part"
    try:
        download(info.url, part, out=out)
        digest = sha256_of(part)
        if info.sha256 is not None and digest != info.sha256:
            raise ModelFetchError(f"checksum mismatch for {info.url}: got sha256 {digest}, "
                                  f"expected {info.sha256}; the file was removed")
        if info.sha256 is None:
            out.write(f"{info.name}: no published checksum; sha256 of the archive is {digest}"
                      " (recorded)\n")
        with tempfile.TemporaryDirectory(dir=models_dir, prefix=".unpack-") as tmp:
            try:
                with zipfile.ZipFile(part) as z:
                    for member in z.namelist():
                        if member.startswith("/") or ".." in Path(member).parts:
                            raise ModelFetchError(f"unsafe path {member!r} in {info.url}")
                    z.extractall(tmp)
            except zipfile.BadZipFile as e:
                raise ModelFetchError(f"{info.url} is not a zip archive: {e}") from e
            entries = list(Path(tmp).iterdir())
            root = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)
            try:
                require_model_files(root, VOSK_FILES, "Vosk", "archive content")
            except AsrModelError as e:
                raise ModelFetchError(f"{info.url} does not hold a Vosk model: {e}") from e
            shutil.move(str(root), target)
        (target / ".callctl-archive.sha256").write_text(f"{digest}  {info.url}\n")
        return target
    finally:
        part.unlink(missing_ok=True)


def verify(path: Path) -> str:
    """Check ``path`` is a Vosk model directory; returns a one-line summary."""
    require_model_files(path, VOSK_FILES, "Vosk", "run `callctl models fetch NAME`")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    record = path / ".callctl-archive.sha256"
    origin = record.read_text().split()[0][:16] + "…" if record.exists() else "unknown"
    return f"{path}: Vosk model OK, {size / 1e6:.0f} MB on disk, archive sha256 {origin}"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from callctl.cli import add_config_argument

    add_config_argument(p)
    sub = p.add_subparsers(dest="models_command", required=True)
    ls = sub.add_parser("list", help="Show the known models and which are installed.")
    ls.add_argument("--models-dir", help="Override asr.models_dir.")
    f = sub.add_parser("fetch", help="Download, check and unpack a model.")
    f.add_argument("name", help="Model name (see `callctl models list`).")
    f.add_argument("--url", help="Download from this URL instead (a mirror).")
    f.add_argument("--sha256", help="Expected sha256 of the archive (with --url).")
    f.add_argument("--models-dir", help="Override asr.models_dir.")
    v = sub.add_parser("verify", help="Check an installed model directory.")
    v.add_argument("name_or_path", help="Model name in the models directory, or a path.")
    v.add_argument("--models-dir", help="Override asr.models_dir.")


def _models_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "models_dir", None):
        return Path(args.models_dir)
    from callctl.cli import load_config_or_exit

    return Path(load_config_or_exit(args).asr.models_dir)


def main(args: argparse.Namespace) -> int:
    try:
        if args.models_command == "list":
            models_dir = _models_dir(args)
            print(f"{'name':<32} {'size':>8}  {'sha256':<8}  installed  note")
            for m in CATALOG.values():
                installed = "yes" if (models_dir / m.installed_name).exists() else "no"
                print(f"{m.name:<32} {m.size_mb:>5} MB  {'yes' if m.sha256 else 'no':<8}  "
                      f"{installed:<9}  {m.note}")
            print(f"(models directory: {models_dir})")
            return 0
        if args.models_command == "fetch":
            info = CATALOG.get(args.name)
            if info is None and not args.url:
                print(f"callctl: unknown model {args.name!r}; known: {', '.join(CATALOG)} "
                      "(or give --url)", file=sys.stderr)
                return 2
            if args.url:
                info = ModelInfo(args.name, args.url, 0, args.sha256, "mirror")
            assert info is not None
            path = fetch(info, _models_dir(args))
            if info.member is not None:
                print(verify_file(path, info))
                print(f"set turns.turn_model_path = \"{path}\" (or leave it at auto) to use it")
                return 0
            print(verify(path))
            print(f"set asr.model_path = \"{path}\" to use it")
            return 0
        known = CATALOG.get(args.name_or_path)
        target = Path(args.name_or_path)
        if known is not None and known.file is not None:
            target = _models_dir(args) / known.file
        elif not target.is_absolute() and not target.exists():
            target = _models_dir(args) / args.name_or_path
        single = known if known is not None and known.file is not None else next(
            (m for m in CATALOG.values() if m.file is not None and m.file == target.name), None)
        if single is not None:
            print(verify_file(target, single))
            return 0
        print(verify(target))
        return 0
    except (ModelFetchError, AsrModelError) as e:
        print(f"callctl: {e}", file=sys.stderr)
        return 1
