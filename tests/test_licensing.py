"""The licence is stated where a packager looks (LICENSE, setup.cfg, the wheel's metadata) and
README's "Licensing" section names every runtime dependency with the licence its installed
metadata declares."""

from __future__ import annotations

import configparser
import importlib.metadata
import re

import pytest
from packaging.requirements import Requirement
from testkit import REPO

README = (REPO / "README.md").read_text()
SECTION = README.split("\n## Licensing\n", 1)[-1].split("\n## ", 1)[0]
#: What a classifier or License field says -> the SPDX id README uses.
SPDX = {"MIT License": "MIT", "MIT": "MIT", "Apache Software License": "Apache-2.0",
        "GNU General Public License v3 (GPLv3)": "GPL-3.0"}


def _setup() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _runtime_requirements() -> list[str]:
    opts = _setup()
    values = [opts["options"]["install_requires"]] + [
        opts["options.extras_require"][k] for k in ("whisper", "coqui")]
    return [Requirement(ln.strip()).name for v in values for ln in v.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def _declared_licence(dist: str) -> str:
    md = importlib.metadata.metadata(dist)
    expr = md.get("License-Expression")
    if expr:
        return expr
    lic = (md.get("License") or "").strip()
    if lic and lic != "UNKNOWN" and "\n" not in lic:
        return SPDX.get(lic, lic)
    classifiers = [c.split(" :: ")[-1] for c in md.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return SPDX.get(classifiers[0], classifiers[0]) if classifiers else ""


def test_license_file_is_the_mit_text_setup_cfg_declares() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted" in text
    meta = _setup()["metadata"]
    assert meta["license"] == "MIT" and meta["license_files"].split() == ["LICENSE"]


def test_readme_names_every_runtime_dependency() -> None:
    for name in _runtime_requirements():
        assert re.search(rf"\b{re.escape(name)}\b", SECTION), f"{name} not in README Licensing"


@pytest.mark.parametrize(("dist", "licence"), [
    ("piper-tts", "GPL-3.0"), ("faster-whisper", "MIT"), ("greenswitch", "MIT"),
    ("vosk", "Apache-2.0"), ("soxr", "LGPL-2.1"), ("h11", "MIT"),
])
def test_readme_licences_match_the_installed_metadata(dist: str, licence: str) -> None:
    assert _declared_licence(dist).startswith(licence), (dist, _declared_licence(dist))
    row = next(ln for ln in SECTION.splitlines() if ln.startswith(f"| `{dist}`")
               or (ln.startswith("| ") and f" {dist}," in ln))
    assert licence in row.split("|")[2], row
    if dist == "piper-tts":
        assert "≥ 1.3" in row and "GPL-3.0" in SECTION.split("What that means", 1)[1]
