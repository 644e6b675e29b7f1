"""``api`` / ``bgapi`` commands of the emulated switch, with FreeSWITCH 1.10.12's exact output
bodies (PROTOCOL.md §4 and the captures' ``*_api_replies.json``).

``execute(switch, command, arg)`` returns the ``api/response`` body. It never raises for bad
input: like FreeSWITCH it answers ``-ERR …`` / ``-USAGE: …``. Arguments are split like
``switch_separate_string`` (blanks; single quotes group words and are removed).
"""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from callctl.sim.channel import Channel, PrivateMessage
from callctl.sim.events import HANGUP_CAUSES

if TYPE_CHECKING:
    from callctl.sim.switch import Switch

VERSION_TEXT = "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n"
NO_CHANNEL = "-ERR No such channel!\n"
COLUMNS = ("uuid", "direction", "created", "created_epoch", "name", "state", "cid_name",
           "cid_num", "ip_addr", "dest", "application", "application_data", "dialplan",
           "context", "read_codec", "read_rate", "read_bit_rate", "write_codec", "write_rate",
           "write_bit_rate", "secure", "hostname", "presence_id", "presence_data",
           "accountcode", "callstate", "callee_name", "callee_num", "callee_direction",
           "call_uuid", "sent_callee_name", "sent_callee_num", "initial_cid_name",
           "initial_cid_num", "initial_ip_addr", "initial_dest", "initial_dialplan",
           "initial_context")


def split_args(text: str) -> list[str]:
    """``switch_separate_string`` on blanks: single quotes group and are removed."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    have = False
    for c in text:
        if c == "'":
            quoted = not quoted
            have = True
        elif c == " " and not quoted:
            if have:
                out.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(c)
            have = True
    if have:
        out.append("".join(cur))
    return out


def execute(sw: Switch, command: str, arg: str) -> str:
    """Run one API command; returns its output (the api/response body)."""
    sw.fire_api_event(command, arg)
    fn = COMMANDS.get(command.lower())
    if fn is None:
        return f"-ERR {command} Command not found!\n"
    return fn(sw, arg)


def _chan(sw: Switch, argv: list[str]) -> Channel | None:
    return sw.channel(argv[0]) if argv else None


def _status(sw: Switch, arg: str) -> str:
    n = len(sw.all_channels())
    return (f"UP {sw.uptime_text()}\n"
            "FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
            f"{sw.session_count} session(s) since startup\n"
            f"{n} session(s) - peak {sw.peak}, last 5min {sw.peak} \n"
            f"0 session(s) per Sec out of max 30, peak {min(sw.peak, 1)}, last 5min "
            f"{min(sw.peak, 1)} \n"
            f"{sw.cfg.max_sessions} session(s) max\n"
            "min idle cpu 0.00/99.00\n"
            "Current Stack Size/Max 240K/8192K\n")


def _row(sw: Switch, ch: Channel) -> dict[str, str]:
    cname, rate, bits = ch.codec or (ch.codec_name, ch.rate, 64000)
    created = ch.created_us / 1e6
    return dict(zip(COLUMNS, (
        ch.uuid, "inbound", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)),
        str(int(created)), ch.name, ch.state, ch.caller_id, ch.caller_id, "127.0.0.1",
        ch.profile.get("Destination-Number", ch.did), ch.current_app, ch.current_app_data,
        "XML", "public", cname, str(rate), str(bits), cname, str(rate), str(bits), "",
        sw.cfg.hostname, "", "", "", ch.call_state, "", "", "", "", "", "", ch.caller_id,
        ch.caller_id, "127.0.0.1", ch.did, "XML", "public"), strict=True))


def _show(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    if not argv or argv[0] != "channels":
        return "-USAGE: codec|endpoint|application|api|dialplan|file|timer|calls [count]|" \
               "channels [count|like <match string>]|calls|detailed_calls|bridged_calls|" \
               "detailed_bridged_calls|aliases|complete|chat|management|modules|nat_map|" \
               "say|interfaces|interface_types|tasks|limits|status\n"
    rows = [_row(sw, ch) for ch in sw.all_channels()]
    if argv[1:2] == ["count"]:
        return f"\n{len(rows)} total.\n"
    if argv[1:] == ["as", "json"]:
        if not rows:
            return '{"row_count": 0}\n'
        return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"),
                          ensure_ascii=False)
    lines = [",".join(COLUMNS)] + [",".join(r.values()) for r in rows] if rows else []
    return "".join(f"{ln}\n" for ln in lines) + f"\n{len(rows)} total.\n"


def _uuid_answer(sw: Switch, arg: str) -> str:
    ch = _chan(sw, split_args(arg))
    return "+OK\n" if ch is not None and ch.answer() else "-ERROR\n"


def _uuid_kill(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    if not argv:
        return "-USAGE: <uuid> [cause]\n"
    ch = _chan(sw, argv)
    if ch is None:
        return NO_CHANNEL
    cause = argv[1].upper() if len(argv) > 1 and argv[1].upper() in HANGUP_CAUSES \
        else "NORMAL_CLEARING"
    ch.hangup(cause)
    return "+OK\n"


def _uuid_break(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    if not argv:
        return "-USAGE: <uuid> [all]\n"
    ch = _chan(sw, argv)
    if ch is None:
        return NO_CHANNEL
    all_ = len(argv) > 1 and argv[1] in ("all", "both")
    if all_:
        ch.flush_inbox()
    ch.media.break_playback(all_)
    return "+OK\n"


def _uuid_fileman(sw: Switch, arg: str) -> str:
    """mod_commands ``uuid_fileman_function``: fewer than two arguments answer with the
    GETVAR syntax (a FreeSWITCH copy-paste bug, kept); an unknown uuid ``-ERR No such
    channel!`` (spelled like the other uuid_* commands in 1.10.12's captures); no file
    playing ``-ERR No File Handle!``; otherwise ``+OK`` whatever the command did
    (``switch_ivr_process_fh``'s result is not checked). Only ``pause`` (a toggle) is
    emulated; other commands (speed, volume, seek, ...) are accepted and do nothing here."""
    argv = split_args(arg)
    if len(argv) < 2 or not argv[0]:
        return "-USAGE: <uuid> <var>\n"
    ch = _chan(sw, argv)
    if ch is None:
        return NO_CHANNEL
    media = ch.media
    if not media.has_file_handle():
        return "-ERR No File Handle!\n"
    if argv[1].lower() == "pause":
        media.toggle_pause()
    return "+OK\n"


def _uuid_broadcast(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    if len(argv) < 2:
        return "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
    ch = _chan(sw, argv)
    if ch is None or not ch.is_up():
        return "-ERR invalid uuid\n"
    path = argv[1]
    app, data = ("playback", path)
    if "::" in path:
        app, _, data = path.partition("::")
        app = app.split("!", 1)[0]
    prefix = [*sw.factory.common("COMMAND"), ("call-command", "execute"),
              ("execute-app-name", app), ("execute-app-arg", data), ("event-lock", "true"),
              ("lead-frames", "5")]
    ch.enqueue(PrivateMessage("execute", app, data, event_lock=True,
                              broadcast=app == "playback", prefix=tuple(prefix)))
    return "+OK Message sent\n"


def _uuid_transfer(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    if len(argv) < 2:
        return "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
    ch = _chan(sw, argv)
    if ch is None:
        return NO_CHANNEL
    rest = [a for a in argv[1:] if a not in ("-bleg", "-both")]
    if not rest:
        return "-ERR\n"
    ch.transfer(rest[0], rest[1] if len(rest) > 1 else "XML")
    return "+OK\n"


def _uuid_bridge(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    if len(argv) < 2:
        return "-USAGE: <uuid> <other_uuid>\n"
    a, b = sw.channel(argv[0]), sw.channel(argv[1])
    if a is None or b is None:
        return "-ERR Invalid uuid\n"
    return f"+OK {b.uuid}\n"


def _uuid_setvar(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    if len(argv) < 2:
        return "-USAGE: <uuid> <var> [value]\n" if not argv else "-ERR No variable specified\n"
    ch = _chan(sw, argv)
    if ch is None:
        return NO_CHANNEL
    ch.set_var(argv[1], " ".join(argv[2:]) or None)
    return "+OK\n"


def _uuid_getvar(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    if len(argv) < 2:
        return "-USAGE: <uuid> <var>\n"
    ch = _chan(sw, argv)
    if ch is None:
        return NO_CHANNEL
    return ch.variables.get(argv[1]) or "_undef_"


def _uuid_exists(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    return "true" if argv and sw.channel(argv[0]) is not None else "false"


def _hupall(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    cause = argv[0].upper() if argv and argv[0].upper() in HANGUP_CAUSES else "MANAGER_REQUEST"
    var = argv[1] if len(argv) > 2 else None
    val = argv[2] if len(argv) > 2 else None
    for ch in sw.all_channels():
        if var is None or ch.variables.get(var) == val:
            ch.hangup(cause)
    if var is not None:
        return f"+OK hangup all channels matching [{var}]=[{val}] with cause: {cause}\n"
    return f"+OK hangup all channels with cause {cause}\n"


def _originate(sw: Switch, arg: str) -> str:
    """``originate <dial-string> <exten>|&app(args)``: a new channel whose caller is the
    dial string's last part, routed to ``exten`` (or running ``app``), answered at once."""
    argv = split_args(arg)
    if len(argv) < 2:
        return "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] " \
               "[<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n"
    dial = argv[0].rsplit("}", 1)[-1]
    caller = dial.rsplit("/", 1)[-1] or "originate"
    target = argv[1]
    call = sw.place_call(target if not target.startswith("&") else "originate", caller)
    if target.startswith("&"):
        app, _, rest = target[1:].partition("(")
        call.channel.inline_actions = [("answer", ""), (app, rest.rstrip(")").strip("'"))]
    return f"+OK {call.uuid}\n"


def _uuid_record(sw: Switch, arg: str) -> str:
    argv = split_args(arg)
    usage = "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>] [<recording_vars>]\n"
    if len(argv) < 3:
        return usage
    ch = _chan(sw, argv)
    if ch is None:
        return "-ERR Cannot locate session!\n"
    action, path = argv[1], argv[2]
    if action == "start":
        if not ch.is_up():
            return "-ERR Cannot record session!\n"
        ch.recordings[path] = (time.monotonic(), ch.rate)
        ch.fire_event("RECORD_START", {"Record-File-Path": path})
        return "+OK Success\n"
    if action == "stop":
        paths = list(ch.recordings) if path == "all" else [path]
        ok = [finish_recording(ch, p) for p in paths]
        return "+OK Success\n" if ok and all(ok) else "-ERR Cannot stop record session!\n"
    if action in ("mask", "unmask", "pause", "resume"):
        return "+OK Success\n"
    return usage


def finish_recording(ch: Channel, path: str) -> bool:
    """Write the recording as a 16-bit mono WAV of the recorded length (the emulator does not
    mix call audio into it: it is silence) and fire RECORD_STOP."""
    started = ch.recordings.pop(path, None)
    if started is None:
        return False
    t0, rate = started
    seconds = (time.monotonic() - t0) * ch.switch.cfg.speed
    try:
        with wave.open(path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(b"\0\0" * int(seconds * rate))
    except OSError:
        ch.log.warning("sim.record_write_failed", path=path)
        return False
    ch.fire_event("RECORD_STOP", {"Record-File-Path": path,
                                  "Record-Completion-Cause": "success"})
    return True


def _uuid_audio_fork(sw: Switch, arg: str) -> str:
    """Delegates to the module emulation with FreeSWITCH's tokenizer (quotes, ``^^|``)."""
    from callctl.sim import audiofork

    def lookup(uuid: str) -> Any:
        ch = sw.channel(uuid)
        return ch.media if ch is not None and ch.is_up() else None

    first = audiofork.tokenize(arg, 2)[:1] if arg.strip() else []
    ch = sw.channel(first[0]) if first else None
    variant = getattr(getattr(ch.media, "forks", None), "variant", "jambonz") if ch else "jambonz"
    return audiofork.uuid_audio_fork(arg, lookup, variant)


COMMANDS: dict[str, Callable[[Switch, str], str]] = {
    "status": _status, "version": lambda sw, a: VERSION_TEXT, "show": _show,
    "uuid_answer": _uuid_answer, "uuid_kill": _uuid_kill, "uuid_break": _uuid_break,
    "uuid_broadcast": _uuid_broadcast, "uuid_transfer": _uuid_transfer,
    "uuid_bridge": _uuid_bridge, "uuid_setvar": _uuid_setvar, "uuid_getvar": _uuid_getvar,
    "uuid_exists": _uuid_exists, "uuid_fileman": _uuid_fileman,
    "uuid_record": _uuid_record, "hupall": _hupall,
    "originate": _originate, "uuid_audio_fork": _uuid_audio_fork,
}
