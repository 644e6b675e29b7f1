"""The hangup-cause table is FreeSWITCH 1.10's whole ``switch_call_cause_t``, and the NOC CLI
and the control endpoint accept every cause of it (the real switch checks the table itself:
tests/realswitch/test_realswitch_causes.py)."""

from __future__ import annotations

import pytest

from callctl import noc
from callctl.causes import HANGUP_CAUSES, SWITCH_CALL_CAUSES, unknown_cause_hint
from callctl.noc import NocError, check_cause


def test_the_table_is_the_whole_enum() -> None:
    assert len(SWITCH_CALL_CAUSES) == 82
    codes = list(SWITCH_CALL_CAUSES.values())
    assert codes == sorted(codes) and len(set(codes)) == len(codes)   # the enum's order
    # the ends and the landmarks of each range of the 1.10 enum
    for name, code in [("NONE", 0), ("UNALLOCATED_NUMBER", 1), ("NO_ROUTE_DESTINATION", 3),
                       ("SUBSCRIBER_ABSENT", 20), ("INTERWORKING", 127), ("SUCCESS", 142),
                       ("ORIGINATOR_CANCEL", 487), ("CRASH", 700), ("LOSE_RACE", 702),
                       ("MANAGER_REQUEST", 703), ("BLIND_TRANSFER", 800),
                       ("ALLOTTED_TIMEOUT", 802), ("MEDIA_TIMEOUT", 804),
                       ("SRTP_READ_ERROR", 813), ("STALE_DATE", 824), ("REJECT_ALL", 825)]:
        assert SWITCH_CALL_CAUSES[name] == code, name
    assert all(n.isupper() and not n.startswith("SWITCH_CAUSE_") for n in SWITCH_CALL_CAUSES)


def test_every_cause_but_none_may_hang_up() -> None:
    assert set(HANGUP_CAUSES) == set(SWITCH_CALL_CAUSES) - {"NONE"}
    assert noc.HANGUP_CAUSES is HANGUP_CAUSES          # one table for the CLI and httpd
    for name in ("NO_ROUTE_DESTINATION", "SUBSCRIBER_ABSENT", "REJECT_ALL", "DECLINE",
                 "USER_NOT_REGISTERED", "normal_clearing"):
        assert check_cause(name) == name.upper()
    with pytest.raises(NocError, match="unknown hangup cause 'NONE'"):
        check_cause("NONE")


def test_an_unknown_cause_gets_a_hint() -> None:
    with pytest.raises(NocError, match="did you mean SUBSCRIBER_ABSENT"):
        check_cause("SUBSCRIBER_ABSENCE")
    assert "e.g. NORMAL_CLEARING" in unknown_cause_hint("BECAUSE")
