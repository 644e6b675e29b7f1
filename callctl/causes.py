"""FreeSWITCH's hangup causes: the whole ``switch_call_cause_t`` table of FreeSWITCH 1.10.

Source: FreeSWITCH v1.10.12, ``src/include/switch_types.h``, ``typedef enum { ... }
switch_call_cause_t`` (https://github.com/signalwire/freeswitch, tag v1.10.12), in the enum's
order, names without the ``SWITCH_CAUSE_`` prefix. The names are the ones the switch accepts
and prints (``switch_channel_str2cause`` / ``switch_channel_cause2str``, the ``CAUSE_CHART``
of ``src/switch_channel.c``, one row per enum member). Codes up to 127 are Q.850's, the rest
FreeSWITCH's own. Older revisions of the header number those differently (``CRASH = 500``,
``MANAGER_REQUEST = 503``, ``MEDIA_TIMEOUT = 604``, and end before ``BUSY_EVERYWHERE`` or
``REJECT_ALL``); 1.10 has ``CRASH = 700`` … ``MEDIA_TIMEOUT = 804`` … ``REJECT_ALL = 825``.
The codes below were read from the installed 1.10.12 build (``switch_channel_cause2str`` of
``libfreeswitch.so`` for every code 0..1999: these 82 and no other), and
``tests/realswitch/test_realswitch_causes.py`` checks each of them there both ways and hangs
up live calls with a few.

``HANGUP_CAUSES`` is what ``callctl hangup --cause`` and ``POST /calls/<uuid>/hangup`` accept:
every cause but ``NONE`` (which is "no cause yet", not something to hang up with).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType

#: ``switch_call_cause_t`` of FreeSWITCH 1.10 (``SWITCH_CAUSE_<name> = <code>``).
SWITCH_CALL_CAUSES: Mapping[str, int] = MappingProxyType({
    "NONE": 0,
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_TRANSIT_NET": 2,
    "NO_ROUTE_DESTINATION": 3,
    "CHANNEL_UNACCEPTABLE": 6,
    "CALL_AWARDED_DELIVERED": 7,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20,
    "CALL_REJECTED": 21,
    "NUMBER_CHANGED": 22,
    "REDIRECTION_TO_NEW_DESTINATION": 23,
    "EXCHANGE_ROUTING_ERROR": 25,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "FACILITY_REJECTED": 29,
    "RESPONSE_TO_STATUS_ENQUIRY": 30,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "SWITCH_CONGESTION": 42,
    "ACCESS_INFO_DISCARDED": 43,
    "REQUESTED_CHAN_UNAVAIL": 44,
    "PRE_EMPTED": 45,
    "FACILITY_NOT_SUBSCRIBED": 50,
    "OUTGOING_CALL_BARRED": 52,
    "INCOMING_CALL_BARRED": 54,
    "BEARERCAPABILITY_NOTAUTH": 57,
    "BEARERCAPABILITY_NOTAVAIL": 58,
    "SERVICE_UNAVAILABLE": 63,
    "BEARERCAPABILITY_NOTIMPL": 65,
    "CHAN_NOT_IMPLEMENTED": 66,
    "FACILITY_NOT_IMPLEMENTED": 69,
    "SERVICE_NOT_IMPLEMENTED": 79,
    "INVALID_CALL_REFERENCE": 81,
    "INCOMPATIBLE_DESTINATION": 88,
    "INVALID_MSG_UNSPECIFIED": 95,
    "MANDATORY_IE_MISSING": 96,
    "MESSAGE_TYPE_NONEXIST": 97,
    "WRONG_MESSAGE": 98,
    "IE_NONEXIST": 99,
    "INVALID_IE_CONTENTS": 100,
    "WRONG_CALL_STATE": 101,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "MANDATORY_IE_LENGTH_ERROR": 103,
    "PROTOCOL_ERROR": 111,
    "INTERWORKING": 127,
    "SUCCESS": 142,
    "ORIGINATOR_CANCEL": 487,
    "CRASH": 700,
    "SYSTEM_SHUTDOWN": 701,
    "LOSE_RACE": 702,
    "MANAGER_REQUEST": 703,
    "BLIND_TRANSFER": 800,
    "ATTENDED_TRANSFER": 801,
    "ALLOTTED_TIMEOUT": 802,
    "USER_CHALLENGE": 803,
    "MEDIA_TIMEOUT": 804,
    "PICKED_OFF": 805,
    "USER_NOT_REGISTERED": 806,
    "PROGRESS_TIMEOUT": 807,
    "INVALID_GATEWAY": 808,
    "GATEWAY_DOWN": 809,
    "INVALID_URL": 810,
    "INVALID_PROFILE": 811,
    "NO_PICKUP": 812,
    "SRTP_READ_ERROR": 813,
    "BOWOUT": 814,
    "BUSY_EVERYWHERE": 815,
    "DECLINE": 816,
    "DOES_NOT_EXIST_ANYWHERE": 817,
    "NOT_ACCEPTABLE": 818,
    "UNWANTED": 819,
    "NO_IDENTITY": 820,
    "BAD_IDENTITY_INFO": 821,
    "UNSUPPORTED_CERTIFICATE": 822,
    "INVALID_IDENTITY": 823,
    "STALE_DATE": 824,
    "REJECT_ALL": 825,
})

#: The causes a call may be hung up with (``uuid_kill``, ``hangup``): all but ``NONE``.
HANGUP_CAUSES: Mapping[str, int] = MappingProxyType(
    {name: code for name, code in SWITCH_CALL_CAUSES.items() if name != "NONE"})

#: Shown when a cause is unknown and nothing close to it is.
EXAMPLES = ("NORMAL_CLEARING", "USER_BUSY", "CALL_REJECTED", "SUBSCRIBER_ABSENT",
            "NO_ROUTE_DESTINATION")


def unknown_cause_hint(cause: str) -> str:
    """What to say about a name that is not in ``HANGUP_CAUSES``: the close matches if any,
    else a few common causes (the whole list is too long for one line)."""
    close = difflib.get_close_matches(cause.upper(), HANGUP_CAUSES, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return ("use a FreeSWITCH cause name (switch_call_cause_t), e.g. "
            + ", ".join(EXAMPLES))


__all__ = ["EXAMPLES", "HANGUP_CAUSES", "SWITCH_CALL_CAUSES", "unknown_cause_hint"]
