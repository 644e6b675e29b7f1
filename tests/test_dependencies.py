"""setup.cfg declares what the code imports, and nothing it does not.

Every third-party top-level import of callctl/ (found with ``ast``, so lazy imports inside
functions count and docstrings do not) belongs to a distribution named in
``install_requires`` or an extra; every test import, there or in ``dev``. Every requirement is
imported somewhere (``dev``: by the tests, or it is a tool the CI runs). Floors that the
code's API needs are checked where we know them."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from testkit import REPO

#: Imports of distributions that are not installed in the test venv (optional extras).
NOT_INSTALLED = {"TTS": "coqui-tts"}
#: dev requirements that are run, not imported.
TOOLS = {"ruff", "mypy"}


def _requirements() -> dict[str, list[Requirement]]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")

    def parse(value: str) -> list[Requirement]:
        return [Requirement(ln.strip()) for ln in value.splitlines()
                if ln.strip() and not ln.strip().startswith("#")]

    sections = {"install_requires": parse(cfg["options"]["install_requires"])}
    for extra, value in cfg["options.extras_require"].items():
        sections[extra] = parse(value)
    return sections


def _top_imports(files: Iterable[Path]) -> dict[str, set[Path]]:
    """Top-level module name -> files importing it (absolute imports only)."""
    out: dict[str, set[Path]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                out.setdefault(name.split(".")[0], set()).add(path)
    return out


@cache
def _local_modules() -> set[str]:
    """Top-level names that are ours: the package and the tests' own helper modules."""
    tests = REPO / "tests"
    return {"callctl"} | {p.stem for p in tests.rglob("*.py")} | {
        p.name for p in tests.rglob("*") if p.is_dir()}


def _third_party(imports: dict[str, set[Path]]) -> dict[str, str]:
    """Third-party top-level import name -> its distribution (canonical name)."""
    dists = importlib.metadata.packages_distributions()
    out = {}
    for name in imports:
        if name in sys.stdlib_module_names or name in _local_modules() or name == "__future__":
            continue
        found = dists.get(name) or ([NOT_INSTALLED[name]] if name in NOT_INSTALLED else [])
        assert found, f"import {name} ({sorted(imports[name])[0]}): no distribution provides it"
        out[name] = canonicalize_name(found[0])
    return out


def _names(reqs: Iterable[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def test_every_import_of_callctl_is_declared() -> None:
    reqs = _requirements()
    runtime = _names(r for k, v in reqs.items() if k != "dev" for r in v)
    used = _third_party(_top_imports((REPO / "callctl").rglob("*.py")))
    missing = {name: dist for name, dist in used.items() if dist not in runtime}
    assert not missing, f"imported by callctl/ but not in install_requires or an extra: {missing}"


def test_every_import_of_the_tests_is_declared() -> None:
    declared = _names(r for v in _requirements().values() for r in v)
    used = _third_party(_top_imports((REPO / "tests").rglob("*.py")))
    missing = {name: dist for name, dist in used.items() if dist not in declared}
    assert not missing, f"imported by tests/ but not declared in setup.cfg: {missing}"


def test_nothing_declared_is_unused() -> None:
    reqs = _requirements()
    by_code = set(_third_party(_top_imports((REPO / "callctl").rglob("*.py"))).values())
    by_tests = set(_third_party(_top_imports((REPO / "tests").rglob("*.py"))).values())
    unused = {s: sorted(n for n in _names(v) if n not in by_code) for s, v in reqs.items()
              if s != "dev"}
    unused["dev"] = sorted(n for n in _names(reqs["dev"])
                           if n not in by_tests | by_code | TOOLS)
    assert not any(unused.values()), f"declared but never imported: {unused}"


def test_floors_the_code_needs() -> None:
    reqs = {canonicalize_name(r.name): r for v in _requirements().values() for r in v}
    # PiperVoice.phoneme_ids_to_audio (callctl/tts/piper.py) is not in piper-tts 1.2.0
    # (which had synthesize_ids_to_raw); it came with 1.3.0.
    piper = reqs["piper-tts"].specifier
    assert Version("1.2.0") not in piper and Version("1.3.0") in piper
    from piper.voice import PiperVoice
    assert callable(PiperVoice.phoneme_ids_to_audio)
    assert importlib.metadata.version("piper-tts") in piper
    # every optional engine is pinned (the coqui extra had no version at all)
    assert str(reqs["coqui-tts"].specifier), "coqui-tts has no version pin"
    assert importlib.metadata.version("h11") in reqs["h11"].specifier
