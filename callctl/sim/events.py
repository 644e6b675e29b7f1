"""Build FreeSWITCH events with 1.10.12's exact header layout (no I/O).

How an event is laid out on the wire (checked against ``fixtures/freeswitch-1.10.12``):

1. the common headers ``Event-Name … Event-Sequence`` (``EventFactory.common``); CUSTOM events
   start with ``Event-Subclass`` (ESL's clone puts it first);
2. event-specific headers that FreeSWITCH adds *before* the channel data
   (``Hangup-Cause`` of CHANNEL_HANGUP_COMPLETE, ``Original-Channel-Call-State`` of
   CHANNEL_CALLSTATE, ``Media-Bug-*``);
3. channel data: the basic part (``Channel-State`` … ``Answer-State``, ``Hangup-Cause`` once a
   cause is set, codecs once negotiated), the ``Caller-*`` profile, then — for the events in
   ``EXTENDED`` only — every channel variable as ``variable_<name>`` in insertion order;
4. event-specific headers added after the channel data (``Application*``,
   ``Playback-File-Path``, ``Playback-Status``);
5. an optional body (serialized by ``eslcodec``).

``Event-Calling-File/-Function/-Line-Number`` come from ``WHERE`` (the values 1.10.12 printed).
"""

from __future__ import annotations

import itertools
import time
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

Header = tuple[str, str]

# event key -> (Event-Calling-File, Event-Calling-Function, Event-Calling-Line-Number)
WHERE: dict[str, tuple[str, str, int]] = {
    "API": ("switch_loadable_module.c", "switch_api_execute", 2954),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", 2408),
    "CODEC_READ": ("switch_core_codec.c", "switch_core_session_set_real_read_codec", 168),
    "CODEC_WRITE": ("switch_core_codec.c", "switch_core_session_set_write_codec", 450),
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", 626),
    "CHANNEL_CALLSTATE": ("switch_channel.c", "switch_channel_perform_set_callstate", 301),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2944),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2967),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3846),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
    "CHANNEL_PROGRESS_MEDIA": ("switch_channel.c",
                               "switch_channel_perform_mark_pre_answered", 3613),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1213),
    "PLAYBACK_START": ("switch_ivr_play_say.c", "switch_ivr_play_file", 1646),
    "PLAYBACK_STOP": ("switch_ivr_play_say.c", "switch_ivr_play_file", 2020),
    "RECORD_START": ("switch_ivr_async.c", "record_callback", 1306),
    "RECORD_STOP": ("switch_ivr_async.c", "record_callback", 1434),
    "PRIVATE_COMMAND": ("switch_ivr.c", "switch_ivr_parse_next_event", 804),
    "COMMAND": ("switch_ivr_async.c", "switch_ivr_broadcast", 5731),
    "HEARTBEAT": ("switch_core.c", "send_heartbeat", 95),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3445),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c",
                                "switch_core_session_reporting_state", 943),
    "CHANNEL_DESTROY": ("switch_core_session.c", "switch_core_session_perform_destroy", 1584),
    "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", 2021),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", 1573),
    "DTMF": ("switch_channel.c", "switch_channel_queue_dtmf", 517),
    "MEDIA_BUG_START": ("switch_core_media_bug.c", "switch_core_media_bug_add", 1014),
    "MEDIA_BUG_STOP": ("switch_core_media_bug.c", "switch_core_media_bug_destroy", 84),
    "CUSTOM": ("mod_audio_fork.c", "responseHandler", 22),
}

# events that carry every channel variable (switch_channel_event_set_extended_data)
EXTENDED = frozenset({
    "CHANNEL_CREATE", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_ANSWER", "CHANNEL_PARK",
    "CHANNEL_UNPARK", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "REQUEST_PARAMS",
    "CHANNEL_DATA", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_DESTROY",
    "SESSION_HEARTBEAT", "API", "RECORD_START", "RECORD_STOP", "PLAYBACK_START",
    "PLAYBACK_STOP", "CALL_UPDATE", "MEDIA_BUG_START", "MEDIA_BUG_STOP", "CHANNEL_HOLD",
    "CHANNEL_UNHOLD", "TEXT", "CUSTOM",
})

STATE_NUMBERS = {
    "CS_NEW": 0, "CS_INIT": 1, "CS_ROUTING": 2, "CS_SOFT_EXECUTE": 3, "CS_EXECUTE": 4,
    "CS_EXCHANGE_MEDIA": 5, "CS_PARK": 6, "CS_CONSUME_MEDIA": 7, "CS_HIBERNATE": 8,
    "CS_RESET": 9, "CS_HANGUP": 10, "CS_REPORTING": 11, "CS_DESTROY": 12,
}
CALLSTATE_NUMBERS = {"DOWN": 0, "DIALING": 1, "RINGING": 2, "EARLY": 3, "ACTIVE": 4,
                     "HELD": 5, "RING_WAIT": 6, "HANGUP": 7, "UNHELD": 8}

HANGUP_CAUSES = {
    "UNSPECIFIED": 0, "UNALLOCATED_NUMBER": 1, "NORMAL_CLEARING": 16, "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18, "NO_ANSWER": 19, "CALL_REJECTED": 21,
    "DESTINATION_OUT_OF_ORDER": 27, "INVALID_NUMBER_FORMAT": 28, "NORMAL_UNSPECIFIED": 31,
    "NORMAL_TEMPORARY_FAILURE": 41, "SERVICE_UNAVAILABLE": 63, "RECOVERY_ON_TIMER_EXPIRE": 102,
    "ORIGINATOR_CANCEL": 487, "LOSE_RACE": 702, "MANAGER_REQUEST": 703,
    "ALLOTTED_TIMEOUT": 802, "MEDIA_TIMEOUT": 804,
}

PROFILE_FIELDS = (
    "Direction", "Logical-Direction", "Username", "Dialplan", "Caller-ID-Name",
    "Caller-ID-Number", "Orig-Caller-ID-Name", "Orig-Caller-ID-Number", "Callee-ID-Name",
    "Callee-ID-Number", "Network-Addr", "ANI", "ANI-II", "Destination-Number", "Unique-ID",
    "Source", "Transfer-Source", "Context", "RDNIS", "Channel-Name", "Profile-Index",
    "Profile-Created-Time", "Channel-Created-Time", "Channel-Answered-Time",
    "Channel-Progress-Time", "Channel-Progress-Media-Time", "Channel-Hangup-Time",
    "Channel-Transfer-Time", "Channel-Resurrect-Time", "Channel-Bridged-Time",
    "Channel-Last-Hold", "Channel-Hold-Accum", "Screen-Bit", "Privacy-Hide-Name",
    "Privacy-Hide-Number",
)


@dataclass(frozen=True)
class Event:
    """One event as FreeSWITCH would queue it to an ESL listener."""

    name: str                         # Event-Name (``CUSTOM`` for custom events)
    headers: tuple[Header, ...]       # every header in wire order
    body: str | None = None
    subclass: str | None = None

    def get(self, name: str) -> str | None:
        """First header of that name (exact case), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def unique_id(self) -> str | None:
        return self.get("Unique-ID")


class ChannelData(Protocol):
    """What the layout needs from a channel (``channel.Channel`` implements it)."""

    @property
    def uuid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str:
        """Running state name, e.g. CS_EXECUTE."""
    @property
    def state_number(self) -> int:
        """Number of the *current* state (may differ from the running state, see §3.2)."""
    @property
    def call_state(self) -> str: ...
    @property
    def answer_state(self) -> str: ...
    @property
    def hangup_cause(self) -> str | None: ...
    @property
    def codec(self) -> tuple[str, int, int] | None:
        """Name, rate, bit rate; None until negotiated."""
    @property
    def profile(self) -> Mapping[str, str]:
        """Caller profile fields without prefix."""
    @property
    def variables(self) -> Mapping[str, str]: ...
    @property
    def show_profile(self) -> bool: ...


class EventFactory:
    """Switch-wide event stamping: Core-UUID, host names, addresses, the global sequence."""

    def __init__(self, hostname: str, ipv4: str = "127.0.0.1", ipv6: str = "::1") -> None:
        self.core_uuid = str(uuidlib.uuid4())
        self.hostname = hostname
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self._seq = itertools.count(1)

    def common(self, name: str, where: str | None = None) -> list[Header]:
        """The 13 headers every event starts with, stamped now."""
        file, func, line = WHERE.get(where or name, ("switch_event.c", "unknown", 0))
        now = time.time()
        return [
            ("Event-Name", name), ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname), ("FreeSWITCH-Switchname", self.hostname),
            ("FreeSWITCH-IPv4", self.ipv4), ("FreeSWITCH-IPv6", self.ipv6),
            ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))),
            ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
            ("Event-Calling-File", file), ("Event-Calling-Function", func),
            ("Event-Calling-Line-Number", str(line)),
            ("Event-Sequence", str(next(self._seq))),
        ]

    # ------------------------------------------------------------------ channel events

    def channel_event(self, name: str, ch: ChannelData, *, where: str | None = None,
                      before: Sequence[Header] = (), after: Sequence[Header] = (),
                      body: str | None = None, subclass: str | None = None,
                      variables: bool | None = None) -> Event:
        """A channel event laid out as described in the module docstring."""
        hdrs = self.common(name, where)
        if subclass is not None:
            hdrs.insert(0, ("Event-Subclass", subclass))
        hdrs += before
        hdrs += channel_data(ch, with_variables=name in EXTENDED if variables is None
                             else variables)
        hdrs += after
        return Event(name, tuple(hdrs), body, subclass)

    def channel_data_reply(self, ch: ChannelData) -> list[Header]:
        """Headers of the outbound ``connect`` reply (CHANNEL_DATA): ``Channel-``-prefixed
        profile first, then the usual channel data with variables."""
        hdrs = self.common("CHANNEL_DATA")
        hdrs += caller_profile(ch, "Channel-")
        hdrs += channel_data(ch, with_variables=True)
        return hdrs

    def plain_event(self, name: str, extra: Sequence[Header], body: str | None = None,
                    where: str | None = None) -> Event:
        """A non-channel event (API, HEARTBEAT, BACKGROUND_JOB)."""
        return Event(name, tuple(self.common(name, where) + list(extra)), body)


def channel_basic(ch: ChannelData) -> list[Header]:
    """``switch_channel_event_set_basic_data`` (without the caller profile)."""
    hdrs: list[Header] = [
        ("Channel-State", ch.state), ("Channel-Call-State", ch.call_state),
        ("Channel-State-Number", str(ch.state_number)), ("Channel-Name", ch.name),
        ("Unique-ID", ch.uuid), ("Call-Direction", "inbound"),
        ("Presence-Call-Direction", "inbound"), ("Channel-HIT-Dialplan", "true"),
        ("Channel-Call-UUID", ch.variables.get("call_uuid", ch.uuid)),
        ("Answer-State", ch.answer_state),
    ]
    if ch.hangup_cause:
        hdrs.append(("Hangup-Cause", ch.hangup_cause))
    if ch.codec is not None:
        cname, rate, bits = ch.codec
        for side in ("Read", "Write"):
            hdrs += [(f"Channel-{side}-Codec-Name", cname), (f"Channel-{side}-Codec-Rate",
                     str(rate)), (f"Channel-{side}-Codec-Bit-Rate", str(bits))]
    return hdrs


def caller_profile(ch: ChannelData, prefix: str = "Caller-") -> list[Header]:
    """``switch_caller_profile_event_set_data``: fields in order, empty ones left out."""
    if not ch.show_profile:
        return []
    return [(prefix + f, ch.profile[f]) for f in PROFILE_FIELDS if ch.profile.get(f)]


def channel_data(ch: ChannelData, with_variables: bool) -> list[Header]:
    """Basic data + caller profile (+ ``variable_*`` when ``with_variables``)."""
    hdrs = channel_basic(ch) + caller_profile(ch)
    if with_variables:
        hdrs += [("variable_" + k, v) for k, v in ch.variables.items() if v != ""]
    return hdrs
