"""Call-control actions on one call's own outbound ESL socket. Each has a timeout and a typed
error; none of them decides anything (that is the session's and the dialog's job).

Every action is one ESL command (``sendmsg`` for dialplan applications, ``api uuid_*`` for
the rest, see PROTOCOL.md §2.5 and §4) sent with ``esl.command_timeout_s``; ``answer`` also
waits for ``CHANNEL_ANSWER``. Errors: ``CallGone`` (the caller hung up or the socket is gone —
stop using this call), ``CallCommandRefused`` (the switch said ``-ERR``/``-USAGE``; the call is
still up), ``CallControlTimeout`` (the switch did not answer; the socket was closed, so the call
will end), ``CallControlUsage`` (our misuse: an argument that would break the command line).
"""

from __future__ import annotations

import json
import re
from typing import Any

import gevent

from callctl.esl.adapter import (
    EslCommandFailed,
    EslDisconnected,
    EslEvent,
    EslTimeout,
    EslUsageError,
    OutboundConnection,
    check_reply,
)

#: Hangup cause names are upper-case words (Q.850 names, FreeSWITCH's own).
_CAUSE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_DTMF = re.compile(r"^[0-9*#A-Da-dwW]{1,64}$")
_VAR = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_BUGNAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class CallControlError(Exception):
    """Base of every call-control error; ``action`` names the action that failed."""

    def __init__(self, action: str, detail: str) -> None:
        super().__init__(f"{action}: {detail}")
        self.action = action


class CallGone(CallControlError):
    """The call hung up or its socket closed. Remedy: end the session; do not retry."""


class CallCommandRefused(CallControlError):
    """FreeSWITCH answered -ERR/-USAGE. The call is still up; ``reply`` has the text."""

    def __init__(self, action: str, reply: str) -> None:
        super().__init__(action, reply.strip()[:200])
        self.reply = reply


class CallControlTimeout(CallControlError):
    """The switch did not answer in time. The socket was closed; the call will end."""


class CallControlUsage(CallControlError):
    """Our misuse: an argument that cannot be sent safely (blank, newline, quote...)."""


def _plain(action: str, what: str, value: str) -> str:
    if not value or any(c in value for c in "\r\n\0"):
        raise CallControlUsage(action, f"{what} must be one non-empty line, got {value!r}")
    return value


def _single_token(action: str, what: str, value: str) -> str:
    _plain(action, what, value)
    if any(c in value for c in " '\\\t"):
        raise CallControlUsage(action, f"{what} must not contain blanks, quotes or "
                               f"backslashes: {value!r}")
    return value


def _quoted_json(action: str, data: Any) -> str:
    """Compact JSON in single quotes, safe through FreeSWITCH's tokenizer (PROTOCOL.md §5.2)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if "'" in text or "\\" in text or "\n" in text:
        raise CallControlUsage(action, "JSON argument must not contain ' or \\ "
                               "(FreeSWITCH's tokenizer would mangle it)")
    if len(text.encode()) > 8192:
        raise CallControlUsage(action, "JSON argument longer than 8192 bytes")
    return f"'{text}'"


class CallControl:
    """The call-control actions for one call. Use only from the call's own greenlet."""

    def __init__(self, conn: OutboundConnection, uuid: str, timeout_s: float = 5.0,
                 transfer_context: str = "default", bridge_profile: str = "external") -> None:
        self.conn = conn
        self.uuid = uuid
        self.timeout_s = timeout_s
        self.transfer_context = transfer_context
        self.bridge_profile = bridge_profile

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, action: str, command: str, timeout: float | None = None) -> EslEvent:
        try:
            ev = self.conn.send(command, timeout=self.timeout_s if timeout is None else timeout)
            check_reply(command, ev)
            return ev
        except EslTimeout as e:
            raise CallControlTimeout(action, str(e)) from None
        except EslDisconnected as e:
            raise CallGone(action, str(e)) from None
        except EslCommandFailed as e:
            raise CallCommandRefused(action, e.reply) from None
        except EslUsageError as e:
            raise CallControlUsage(action, str(e)) from None

    def _api(self, action: str, args: str) -> str:
        return str(self._send(action, f"api {args}").data or "")

    def _execute(self, action: str, app: str, arg: str | None = None,
                 extra: dict[str, str] | None = None) -> None:
        lines = ["sendmsg", "call-command: execute", f"execute-app-name: {app}"]
        if arg:
            lines.append(f"execute-app-arg: {_plain(action, 'argument', arg)}")
        for k, v in (extra or {}).items():
            lines.append(f"{k}: {_plain(action, k, v)}")
        self._send(action, "\n".join(lines))

    # -- actions -------------------------------------------------------------------------

    def answer(self) -> EslEvent:
        """Answer and wait for ``CHANNEL_ANSWER`` (``+OK`` alone comes before the 200 OK)."""
        done = self.conn.expect(lambda e: e.headers.get("Event-Name") == "CHANNEL_ANSWER")
        self._execute("answer", "answer")
        try:
            ev: EslEvent = done.get(timeout=self.timeout_s)
            return ev
        except EslDisconnected as e:
            raise CallGone("answer", str(e)) from None
        except gevent.Timeout:
            raise CallControlTimeout("answer", "no CHANNEL_ANSWER in time") from None

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Hang up with ``cause`` (``sendmsg`` call-command hangup); returns after ``+OK``."""
        if not _CAUSE.match(cause):
            raise CallControlUsage("hangup", f"not a hangup cause: {cause!r}")
        self._send("hangup", f"sendmsg\ncall-command: hangup\nhangup-cause: {cause}")

    def play(self, path: str, event_uuid: str) -> None:
        """``sendmsg`` execute playback with ``event-lock`` and ``Event-UUID`` on the call's
        own socket (not uuid_broadcast); returns after ``+OK``. Completion arrives as
        CHANNEL_EXECUTE_COMPLETE with ``Application-UUID == event_uuid``."""
        _single_token("play", "event_uuid", event_uuid)
        self._execute("play", "playback", path,
                      {"event-lock": "true", "Event-UUID": event_uuid})

    def stop_playback(self) -> None:
        """``api uuid_break <uuid> all``: stop the current file and drop queued ones."""
        self._api("stop_playback", f"uuid_break {self.uuid} all")

    def toggle_pause(self) -> bool:
        """``api uuid_fileman <uuid> pause``: TOGGLE the pause of the file playing now
        (mod_commands ``uuid_fileman_function`` → ``switch_ivr_process_fh``). True on
        ``+OK``; False on ``-ERR No File Handle!`` (no file playing at this instant); other
        refusals raise ``CallCommandRefused`` (``-ERR No Such Channel!``)."""
        try:
            self._api("toggle_pause", f"uuid_fileman {self.uuid} pause")
        except CallCommandRefused as e:
            if "No File Handle" in e.reply:
                return False
            raise
        return True

    def transfer(self, dest: str) -> None:
        """Blind transfer. An extension (``1000``, or ``1000 XML ctx``) goes through
        ``uuid_transfer``; a SIP URI (``sip:user@host`` or ``user@host``) is bridged out
        through ``esl.bridge_profile``."""
        _plain("transfer", "destination", dest)
        if dest.startswith("sip:") or "@" in dest:
            uri = dest[4:] if dest.startswith("sip:") else dest
            _single_token("transfer", "SIP URI", uri)
            self.bridge(f"sofia/{self.bridge_profile}/{uri}")
            return
        parts = dest.split()
        for p in parts:
            _single_token("transfer", "destination", p)
        if len(parts) == 1:
            parts += ["XML", self.transfer_context]
        if len(parts) > 3:
            raise CallControlUsage("transfer", f"too many words in {dest!r}")
        self._api("transfer", f"uuid_transfer {self.uuid} {' '.join(parts)}")

    def bridge(self, endpoint: str) -> None:
        """``sendmsg`` execute ``bridge <endpoint>`` (an agent, a queue, a gateway dial
        string); returns after ``+OK``; the outcome arrives as events."""
        _single_token("bridge", "endpoint", endpoint)
        self._execute("bridge", "bridge", endpoint)

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF to the caller (``uuid_send_dtmf``)."""
        if not _DTMF.match(digits):
            raise CallControlUsage("send_dtmf", f"not DTMF digits: {digits!r}")
        self._api("send_dtmf", f"uuid_send_dtmf {self.uuid} {digits}")

    def record_start(self, path: str, limit_s: int = 0) -> None:
        """Start recording the call to ``path`` (``uuid_record start``). Off unless called."""
        _single_token("record_start", "path", path)
        tail = f" {int(limit_s)}" if limit_s > 0 else ""
        self._api("record_start", f"uuid_record {self.uuid} start {path}{tail}")

    def record_stop(self, path: str = "all") -> None:
        """Stop one recording (or ``all``)."""
        _single_token("record_stop", "path", path)
        self._api("record_stop", f"uuid_record {self.uuid} stop {path}")

    def setvar(self, name: str, value: str) -> None:
        """Set a channel variable (``uuid_setvar``); empty ``value`` unsets it."""
        if not _VAR.match(name):
            raise CallControlUsage("setvar", f"bad variable name {name!r}")
        if value:
            _single_token("setvar", "value", value)
        self._api("setvar", f"uuid_setvar {self.uuid} {name} {value}".rstrip())

    def getvar(self, name: str) -> str | None:
        """A channel variable's value, or None when unset (``_undef_``)."""
        if not _VAR.match(name):
            raise CallControlUsage("getvar", f"bad variable name {name!r}")
        out = self._api("getvar", f"uuid_getvar {self.uuid} {name}")
        return None if out in ("_undef_", "") else out

    def audio_fork_start(self, url: str, rate: int, metadata: Any = None,
                         mix: str = "mono", bugname: str = "callctl",
                         bidi_rate: int | None = None) -> None:
        """``uuid_audio_fork <uuid> start <url> <mix> <8k|16k> <bugname> '<json>'``: always
        with a bugname and single-quoted compact JSON (PROTOCOL.md §5.2). ``bidi_rate``
        (jambonz only, §5.3) appends ``true true <bidi_rate>``: bidirectional streaming, the
        server's binary frames (L16 mono at ``bidi_rate`` Hz) are played to the caller."""
        if bidi_rate is not None and (bidi_rate <= 0 or bidi_rate % 8000):
            raise CallControlUsage("audio_fork_start",
                                   f"bidi_rate must be N x 8000 Hz: {bidi_rate}")
        _single_token("audio_fork_start", "url", url)
        if mix not in ("mono", "mixed", "stereo"):
            raise CallControlUsage("audio_fork_start", f"mix must be mono/mixed/stereo: {mix}")
        if rate <= 0 or rate % 8000:
            raise CallControlUsage("audio_fork_start", f"rate must be N x 8000 Hz: {rate}")
        if not _BUGNAME.match(bugname):
            raise CallControlUsage("audio_fork_start", f"bad bugname {bugname!r}")
        rate_s = {8000: "8k", 16000: "16k"}.get(rate, str(rate))
        meta = _quoted_json("audio_fork_start", metadata if metadata is not None else {})
        bidi = f" true true {bidi_rate}" if bidi_rate is not None else ""
        self._api("audio_fork_start", f"uuid_audio_fork {self.uuid} start {url} {mix} {rate_s} "
                  f"{bugname} {meta}{bidi}")

    def audio_fork_stop(self, bugname: str = "callctl", text: Any = None) -> None:
        """``uuid_audio_fork <uuid> stop <bugname> ['<json>']``."""
        if not _BUGNAME.match(bugname):
            raise CallControlUsage("audio_fork_stop", f"bad bugname {bugname!r}")
        tail = f" {_quoted_json('audio_fork_stop', text)}" if text is not None else ""
        self._api("audio_fork_stop", f"uuid_audio_fork {self.uuid} stop {bugname}{tail}")
