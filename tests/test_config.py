from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from callctl import config
from callctl.cli import cli_main
from callctl.log import get_logger, mask_number, setup


def test_defaults_load_without_file(tmp_path: Path) -> None:
    cfg = config.load(None, env={})
    assert cfg.esl.listen_port == 8040
    assert cfg.media.listen_port == 8041
    assert cfg.metrics.listen_port == 9464


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[esl]\nport = 99999\n", "esl.port: 99999 is not allowed: must be a TCP port"),
        ("[esl]\nprot = 1\n", "esl.prot: unknown setting"),
        ("[nope]\n", "nope: unknown section"),
        ("[asr]\nengine = 'kaldi'\n", "asr.engine: 'kaldi' is not allowed: must be one of"),
        ("[esl]\nport = '8021'\n", "esl.port: '8021' is not allowed: must be an integer"),
        ("[esl\n", "not valid TOML"),
        ("[esl]\npassword = 'pw with blank'\n", "esl.password: *** is not allowed"),
        ("[[routes]]\nflow = 'x'\n", "routes[0].did: missing"),
        ("[[routes]]\ndid='1'\n[[routes]]\ndid='+1'\n", "duplicate route"),
    ],
)
def test_bad_config_names_key_value_and_rule(tmp_path: Path, text: str, fragment: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(p, env={})
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_env_overrides_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[esl]\nport = 1000\n[turns]\nbackchannels = ['a']\n")
    cfg = config.load(p, env={"CALLCTL_ESL_PORT": "2000", "CALLCTL_TURNS_BACKCHANNELS": "x, y"})
    assert cfg.esl.port == 2000
    assert cfg.turns.backchannels == ["x", "y"]


def test_secret_masked_in_bad_value_and_print(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[esl]\npassword = 'hunter2'\n[store]\nredis_url = 'redis://:pw1@h:6379/0'\n")
    assert cli_main(["print-config", "--config", str(p), "--json"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "pw1" not in out
    data = json.loads(out)
    assert data["esl"]["password"] == "***"
    assert data["store"]["redis_url"] == "redis://:***@h:6379/0"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    flows = Path(__file__).resolve().parent.parent / "callctl" / "examples" / "flows"
    good.write_text(f"[dialog]\nflows_dir = '{flows}'\n"
                    "[[routes]]\ndid = '+15551230000'\nflow = 'front_desk'\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[metrics]\nlisten_port = 0\n")
    assert cli_main(["check-config", "--config", str(good)]) == 0
    with pytest.raises(SystemExit) as e:
        cli_main(["check-config", "--config", str(bad)])
    assert e.value.code == 2
    assert "metrics.listen_port: 0 is not allowed" in capsys.readouterr().err


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "callctl" / "examples" / "callctl.toml"
    cfg = config.load(example, env={})
    assert cfg.routes, "the example config should show at least one route"


def test_route_lookup_ignores_plus() -> None:
    cfg = config.from_mapping({"routes": [{"did": "+15551230000", "flow": "f"}]}, env={})
    assert cfg.route_for("15551230000") is not None
    assert cfg.route_for("+15551230001") is None


def test_logs_are_json_and_mask_secrets_and_callers() -> None:
    buf = io.StringIO()
    setup(config.LogConfig(format="json"), stream=buf)
    get_logger(call_uuid="u1").info("call.start", caller="+15551234567", password="pw",
                                    url="redis://:pw@h/0")
    line = json.loads(buf.getvalue().splitlines()[-1])
    assert line["call_uuid"] == "u1"
    assert line["caller"] == "********4567"
    assert line["password"] == "***"
    assert "pw" not in line["url"]
    assert mask_number("12") == "***"


def test_debug_level_shows_caller() -> None:
    buf = io.StringIO()
    setup(config.LogConfig(format="json", level="debug"), stream=buf)
    get_logger().debug("x", caller="+15551234567")
    assert json.loads(buf.getvalue().splitlines()[-1])["caller"] == "+15551234567"
