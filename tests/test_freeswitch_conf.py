"""freeswitch/conf: well-formed XML, a configuration tree that assembles, and the facts callctl
depends on (socket address, ESL on loopback, ACLs, modules, codecs, fallback chain).

How this works: ``assemble()`` is a small model of FreeSWITCH's pre-processor: starting at
freeswitch.xml it follows ``X-PRE-PROCESS include`` (globs relative to the including file),
records ``set`` variables in order and expands ``$${var}``, so an include that matches nothing
or a variable nobody sets is caught here rather than on the switch. The assembled document is
then parsed and inspected.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from callctl import config

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "freeswitch" / "conf"
XML_FILES = sorted([*CONF.rglob("*.xml"), *CONF.rglob("*.xml.example")])
# Variables FreeSWITCH defines itself at start-up.
BUILTIN_VARS = {"local_ip_v4", "local_ip_v6", "local_mask_v4", "sounds_dir", "base_dir",
                "conf_dir", "log_dir", "run_dir", "db_dir", "mod_dir", "recordings_dir",
                "storage_dir", "cache_dir", "temp_dir", "script_dir", "hostname", "core_uuid"}
BUILTIN_ACLS = {"loopback.auto", "localnet.auto", "rfc1918.auto", "nat.auto", "wan.auto"}
# Includes that may legitimately match no file (operator-provided secrets).
OPTIONAL_INCLUDES = {"vars.local/*.xml"}
PRE = re.compile(r'<X-PRE-PROCESS\s+cmd="(?P<cmd>[\w-]+)"\s+data="(?P<data>[^"]*)"\s*/>')


@dataclass
class Assembled:
    text: str = ""
    vars: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _expand(s: str, out: Assembled, where: Path) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in out.vars:
            return out.vars[name]
        if name not in BUILTIN_VARS:
            out.problems.append(f"{where.relative_to(CONF)}: $${{{name}}} is never set")
        return f"builtin:{name}"

    return re.sub(r"\$\$\{(\w+)\}", one, s)


def _include(path: Path, out: Assembled) -> None:
    out.files.append(path)
    for line in path.read_text().splitlines():
        m = PRE.search(line)
        if m is None:
            if line.strip() in ("<include>", "</include>") or line.startswith("<?xml"):
                continue
            out.text += _expand(line, out, path) + "\n"
            continue
        if m["cmd"] == "set":
            name, _, value = m["data"].partition("=")
            out.vars[name] = _expand(value, out, path)
        elif m["cmd"] == "include":
            matches = sorted(p.resolve() for p in path.parent.glob(m["data"]))
            if not matches and m["data"] not in OPTIONAL_INCLUDES:
                out.problems.append(f"{path.relative_to(CONF)}: include {m['data']!r} "
                                    "matches no file")
            for inc in matches:
                _include(inc, out)
        else:
            out.problems.append(f"{path.relative_to(CONF)}: unexpected X-PRE-PROCESS "
                                f"{m['cmd']!r}")


def assemble() -> Assembled:
    out = Assembled()
    _include(CONF / "freeswitch.xml", out)
    return out


@pytest.fixture(scope="module")
def tree() -> tuple[Assembled, ET.Element]:
    a = assemble()
    assert not a.problems, a.problems
    return a, ET.fromstring(a.text)


def params(el: ET.Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in el.iter("param"):
        out.setdefault(p.get("name", ""), []).append(p.get("value", ""))
    return out


def configuration(root: ET.Element, name: str) -> ET.Element:
    found = root.find(f"./section[@name='configuration']/configuration[@name='{name}']")
    assert found is not None, f"{name} missing"
    return found


# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint not installed")
@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_xml_file_is_well_formed(path: Path) -> None:
    run = subprocess.run(["xmllint", "--noout", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 0, run.stderr


def test_tree_assembles_from_freeswitch_xml(tree: tuple[Assembled, ET.Element]) -> None:
    a, root = tree
    assert root.tag == "document"
    reached = {p.relative_to(CONF).as_posix() for p in a.files}
    shipped = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.xml")}
    assert reached == shipped, f"files never included: {shipped - reached}"


def test_assembler_reports_unset_variables_and_dead_includes(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    (tmp_path / "freeswitch.xml").write_text(
        '<document>\n<X-PRE-PROCESS cmd="include" data="nothing/*.xml"/>\n'
        '<x a="$${nobody_sets_this}"/>\n</document>\n')
    monkeypatch.setattr(__import__(__name__), "CONF", tmp_path)
    problems = assemble().problems
    assert any("matches no file" in p for p in problems)
    assert any("nobody_sets_this" in p for p in problems)


def test_event_socket_is_loopback_with_password_and_acl(
        tree: tuple[Assembled, ET.Element]) -> None:
    a, root = tree
    es = params(configuration(root, "event_socket.conf"))
    assert ipaddress.ip_address(es["listen-ip"][0]).is_loopback
    assert int(es["listen-port"][0]) == config.EslConfig().port
    raw = (CONF / "autoload_configs" / "event_socket.conf.xml").read_text()
    assert 'name="password" value="$${esl_password}"' in raw
    assert a.vars["esl_password"] not in ("", "ClueCon")
    assert es["apply-inbound-acl"] == ["esl_clients"]
    acl = configuration(root, "acl.conf")
    esl = acl.find("./network-lists/list[@name='esl_clients']")
    assert esl is not None and esl.get("default") == "deny"
    allowed = [ipaddress.ip_network(n.get("cidr", "")) for n in esl if n.get("type") == "allow"]
    assert allowed and all(net.is_loopback for net in allowed)


def test_every_referenced_acl_exists(tree: tuple[Assembled, ET.Element]) -> None:
    _, root = tree
    defined = {lst.get("name") for lst in configuration(root, "acl.conf").iter("list")}
    referenced = set()
    for p in root.iter("param"):
        if p.get("name") in ("apply-inbound-acl", "local-network-acl", "apply-register-acl"):
            referenced.add(p.get("value"))
    assert {"esl_clients", "sip_trunk"} <= referenced
    assert referenced <= defined | BUILTIN_ACLS, referenced - defined - BUILTIN_ACLS


def test_modules_for_callctl_are_loaded(tree: tuple[Assembled, ET.Element]) -> None:
    _, root = tree
    loaded = [m.get("module") for m in configuration(root, "modules.conf").iter("load")]
    for needed in ("mod_event_socket", "mod_sofia", "mod_commands", "mod_dptools",
                   "mod_dialplan_xml", "mod_spandsp", "mod_sndfile", "mod_audio_fork",
                   "mod_loopback"):
        assert needed in loaded, needed
    assert len(loaded) == len(set(loaded))
    raw = (CONF / "autoload_configs" / "modules.conf.xml").read_text()
    assert "MOD_AUDIO_FORK_SUBPROTOCOL_NAME" in raw and "audio-fork.conf" in raw


def test_audio_fork_environment_dropin() -> None:
    from callctl.media.forkserver import SUBPROTOCOL

    text = (CONF / "systemd" / "freeswitch.service.d" / "audio-fork.conf").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "[Service]"
    env = dict(ln.removeprefix("Environment=").split("=", 1) for ln in lines[1:])
    assert env["MOD_AUDIO_FORK_SUBPROTOCOL_NAME"] == SUBPROTOCOL
    assert 1 <= int(env["MOD_AUDIO_FORK_SERVICE_THREADS"]) <= 5
    assert 1 <= int(env["MOD_AUDIO_FORK_BUFFER_SECS"]) <= 5


def test_codecs_and_trunk(tree: tuple[Assembled, ET.Element]) -> None:
    a, root = tree
    assert a.vars["global_codec_prefs"] == "G722,PCMU,PCMA"
    assert a.vars["outbound_codec_prefs"] == "G722,PCMU,PCMA"
    profiles = root.findall(".//configuration[@name='sofia.conf']/profiles/profile")
    assert [p.get("name") for p in profiles] == ["external"]
    ext = profiles[0]
    s = params(ext.find("settings"))  # type: ignore[arg-type]
    assert s["context"] == ["public"] and s["dialplan"] == ["XML"]
    assert s["inbound-codec-prefs"] == ["G722,PCMU,PCMA"]
    assert s["apply-inbound-acl"] == ["sip_trunk"]
    gateways = {g.get("name"): params(g) for g in ext.iter("gateway")}
    assert gateways["carrier"]["register"] == ["true"]
    assert gateways["carrier"]["password"] == [a.vars["carrier_password"]]
    assert gateways["carrier_ipauth"]["register"] == ["false"]


#: Profile params FreeSWITCH 1.10 warns about at start-up ("... deprecated use ...").
DEPRECATED_PARAMS = ("rtp-timeout-sec", "rtp-hold-timeout-sec")


def test_no_deprecated_profile_params_and_media_timeouts_per_call(
        tree: tuple[Assembled, ET.Element]) -> None:
    """The RTP inactivity timeouts are the media_timeout / media_hold_timeout channel
    variables (milliseconds), set before the socket app (RTP starts when callctl answers),
    not the deprecated profile params."""
    _, root = tree
    for profile in root.findall(".//configuration[@name='sofia.conf']/profiles/profile"):
        s = params(profile.find("settings"))  # type: ignore[arg-type]
        assert not set(s) & set(DEPRECATED_PARAMS), profile.get("name")
    actions = _callctl_actions(root)
    before = dict(d.split("=", 1) for app, d in actions[:[a for a, _ in actions].index("socket")]
                  if app == "set")
    assert int(before["media_timeout"]) == 300_000          # 5 min, as rtp-timeout-sec was
    assert int(before["media_hold_timeout"]) == 1_800_000   # 30 min on hold


def _callctl_actions(root: ET.Element) -> list[tuple[str, str]]:
    ext = root.find(".//context[@name='public']/extension[@name='callctl']")
    assert ext is not None
    return [(a.get("application", ""), a.get("data", "")) for a in ext.iter("action")]


def test_dialplan_sends_dids_to_callctl_socket(tree: tuple[Assembled, ET.Element]) -> None:
    _, root = tree
    example = config.load(REPO / "callctl" / "examples" / "callctl.toml", env={})
    for cfg in (config.from_mapping({}, env={}), example):
        want = f"{cfg.esl.listen_host}:{cfg.esl.listen_port} async full"
        sockets = [d for app, d in _callctl_actions(root) if app == "socket"]
        assert sockets == [want, want, want]   # offer, re-offer at once, after the hold
    cond = root.find(".//extension[@name='callctl']/condition")
    assert cond is not None and cond.get("field") == "destination_number"
    for route in example.routes:
        assert re.match(cond.get("expression", ""), route.did), route.did
    assert not re.match(cond.get("expression", ""), "+15559999999")


def test_dialplan_fallback_chain(tree: tuple[Assembled, ET.Element]) -> None:
    a, root = tree
    actions = _callctl_actions(root)
    apps = [app for app, _ in actions]
    first_socket = apps.index("socket")
    before = dict(d.split("=", 1) for app, d in actions[:first_socket] if app == "set")
    assert before["jitterbuffer_msec"] == "60:200"
    assert before["continue_on_fail"] == "true"
    # comfort noise is a vars.xml level (0 = off; stream playback does not depend on it)
    assert before["send_silence_when_idle"] == a.vars["callctl_idle_silence"] == "400"
    fallback = [app for app in apps[first_socket + 1:] if app not in ("log", "set")]
    assert fallback == ["socket", "answer", "playback", "socket", "bridge", "hangup"]
    hold = dict(actions)["playback"]
    assert hold == a.vars["callctl_hold_prompt"] and hold.startswith("tone_stream://")
    assert actions[-1] == ("hangup", "NORMAL_TEMPORARY_FAILURE")
    bridge = dict(actions)["bridge"]
    assert bridge == a.vars["callctl_human_dialstring"]
    gw = re.match(r"sofia/gateway/(\w+)/", bridge)
    if gw:  # a gateway dial string must name a gateway that exists
        assert root.find(f".//gateway[@name='{gw[1]}']") is not None


def test_transfer_context_exists_for_callctl_transfers(tree: tuple[Assembled, ET.Element]
                                                       ) -> None:
    """``callctl transfer UUID operator`` runs uuid_transfer … XML <esl.transfer_context>."""
    a, root = tree
    ctx = root.find(f".//context[@name='{config.EslConfig().transfer_context}']")
    assert ctx is not None
    humans = ctx.find("./extension[@name='humans']")
    assert humans is not None
    cond = humans.find("condition")
    assert cond is not None and re.match(cond.get("expression", ""), "operator")
    actions = [(x.get("application"), x.get("data")) for x in humans.iter("action")]
    assert ("bridge", a.vars["callctl_human_dialstring"]) in actions
    assert actions[-1] == ("hangup", "NORMAL_TEMPORARY_FAILURE")
    profiles = {p.get("name") for p in root.iter("profile")}
    assert config.EslConfig().bridge_profile in profiles
