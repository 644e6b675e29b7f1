"""callctl's freeswitch/conf loaded by a real FreeSWITCH 1.10.12 as a drop-in (only
vars.local/test.xml added): the modules it lists are loaded, the carrier profile runs on the
address vars.xml names, the ESL and trunk ACLs say what they should, and the dialplan's
fallback chain runs on a call that callctl does not take (no daemon listening)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fskit import CONF, FreeSwitch, wait_for
from testkit import free_port

from callctl.sim.phone import Phone

HOLD = "tone_stream://L=1;%(600,200,440,480)"


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreeSwitch]:
    sw = FreeSwitch(tmp_path_factory.mktemp("fs"), callctl_esl_port=free_port(),
                    extra_vars={"callctl_hold_prompt": HOLD})
    sw.start()
    yield sw
    sw.stop()


def test_every_listed_module_is_loaded(fs: FreeSwitch) -> None:
    listed = [m.get("module") for m in
              ET.parse(CONF / "autoload_configs" / "modules.conf.xml").iter("load")]
    assert "mod_audio_fork" in listed
    for mod in listed:
        assert fs.api(f"module_exists {mod}") == "true", mod


def test_carrier_profile_runs_on_the_vars_address(fs: FreeSwitch) -> None:
    status = fs.api("sofia status")
    row = next(ln for ln in status.splitlines() if re.match(r"\s*external\s+profile", ln))
    assert f"sip:mod_sofia@127.0.0.1:{fs.sip_port}" in row and "RUNNING" in row
    assert fs.api("global_getvar sip_ip") == "127.0.0.1"


def test_acls(fs: FreeSwitch) -> None:
    assert fs.api("acl 127.0.0.1 esl_clients") == "true"
    assert fs.api("acl 192.0.2.7 esl_clients") == "false"
    # the shipped trunk list holds the documentation address (vars.local switched the
    # profile to loopback.auto for the test caller)
    assert fs.api("acl 203.0.113.10 sip_trunk") == "true"
    assert fs.api("acl 127.0.0.1 sip_trunk") == "false"


def test_shipped_conf_loads_without_errors(fs: FreeSwitch) -> None:
    errors = [ln for ln in fs.log_text().splitlines()
              if "[ERR]" in ln or "[CRIT]" in ln or ("Error" in ln and "XML" in ln)]
    # the example carrier gateway cannot resolve its placeholder host on a test machine
    errors = [ln for ln in errors if "sip.carrier.example" not in ln]
    assert not errors, errors


def test_fallback_chain_when_callctl_does_not_take_the_call(fs: FreeSwitch,
                                                           tmp_path: Path) -> None:
    call = Phone("127.0.0.1", fs.sip_port).call("+15551230000", "+15550009999")
    assert call.wait_answered(10)                # the fallback answers to play the hold tone
    cause = call.wait_hangup(30)
    assert cause == "NORMAL_TEMPORARY_FAILURE"   # humans busy (error/USER_BUSY), then hangup
    assert call.heard(), "the caller heard no hold tone"
    mine = [ln for ln in fs.log_text().splitlines() if "+15550009999" in ln or "socket(" in ln]
    apps = [m[1] for ln in mine if (m := re.search(r"EXECUTE \[depth=\d+\] \S+ (\w+)\(", ln))]
    chain = [a for a in apps if a not in ("set", "log")]
    assert chain == ["socket", "socket", "answer", "playback", "socket", "bridge", "hangup"]
    wait_for("the channel to go", lambda: not fs.channels(), 10)


def test_no_deprecated_settings(fs: FreeSwitch) -> None:
    """FreeSWITCH 1.10 names what it will drop ("rtp-timeout-sec deprecated use media_timeout
    variable"): the shipped config uses none of it."""
    deprecated = [ln for ln in fs.log_text().splitlines() if "deprecated" in ln.lower()]
    assert not deprecated, deprecated


def test_media_timeouts_are_set_on_the_channel(fs: FreeSwitch) -> None:
    """media_timeout / media_hold_timeout (ms) come from the dialplan, before the socket app:
    a call's channel has them (read while callctl is not listening, in the fallback)."""
    call = Phone("127.0.0.1", fs.sip_port).call("+15551230000", "+15550008888")
    assert call.wait_answered(10)
    uuid = wait_for("the call's channel", lambda: next(
        (r["uuid"] for r in fs.channels() if r.get("cid_num") == "+15550008888"), None), 10)
    assert fs.api(f"uuid_getvar {uuid} media_timeout") == "300000"
    assert fs.api(f"uuid_getvar {uuid} media_hold_timeout") == "1800000"
    call.hangup()
    wait_for("the channel to go", lambda: not fs.channels(), 10)
