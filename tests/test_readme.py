"""README.md must tell the truth: its config reference and commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

from callctl import config
from callctl.cli import COMMANDS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_config_reference_in_sync() -> None:
    block = README.split("<!-- config-reference:start -->\n", 1)[1].split(
        "<!-- config-reference:end -->", 1)[0]
    assert block.strip() == config.markdown_reference().strip(), (
        "README config table is stale: run `python -m callctl.config` and paste it")


def test_every_command_documented() -> None:
    for name in COMMANDS:
        assert re.search(rf"`callctl {re.escape(name)}\b", README), f"{name} not in README"


def test_two_commands_present() -> None:
    assert "bash .ci/setup && .venv/bin/callctl demo" in README
    assert "bash .ci/setup && .venv/bin/python -m pytest" in README
