"""Start-up reconciliation: parsing `show channels as json` and the plan for each case."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from store_helpers import (
    StoreFactory,
    make_store_fixture,  # noqa: F401 (pytest fixtures)
    new_call,
)

from callctl.store import (
    ChannelListError,
    FsChannel,
    parse_channels,
    plan_reconciliation,
    reconcile,
)


def _capture_row(fixtures_dir: Path) -> dict[str, str]:
    body = (fixtures_dir / "01_park_api_show_channels_during_call.json").read_text()
    return dict(json.loads(body)["rows"][0])


def test_parse_real_capture(fixtures_dir: Path) -> None:
    body = (fixtures_dir / "01_park_api_show_channels_during_call.json").read_bytes()
    (ch,) = parse_channels(body)
    assert ch.uuid == "0a775e25-9509-4dba-a8ef-a1f8363affea"
    assert (ch.direction, ch.application, ch.callstate, ch.cid_num) == (
        "inbound", "park", "ACTIVE", "sipp")
    assert ch.created_epoch == 1795662832 and ch.hostname == "vm"


def test_parse_zero_rows_form() -> None:
    assert parse_channels(b'{"row_count": 0}\n') == []
    assert parse_channels('{"row_count":0,"rows":[]}') == []


@pytest.mark.parametrize("body", [
    b"", b"-ERR no reply\n", b"[]", b'{"rows":[]}', b'{"row_count":1,"rows":{}}',
    b'{"row_count":1,"rows":[{"direction":"inbound"}]}',
    b'{"row_count":1,"rows":[{"uuid":"u","created_epoch":"soon"}]}',
    b'{"row_count":1,"rows":[{"uuid":"u","application":5}]}', b"\xff\xfe",
])
def test_parse_garbage_is_our_error(body: bytes) -> None:
    with pytest.raises(ChannelListError):
        parse_channels(body)


@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["row_count", "rows", "uuid", "application", "created_epoch", "x"]),
        inner, max_size=4),
    max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_parse_fuzz_parsed_or_our_error(body: bytes) -> None:
    try:
        rows = parse_channels(body)
    except ChannelListError:
        return
    assert all(isinstance(r, FsChannel) and r.uuid for r in rows)


def _ch(uuid: str, application: str = "socket", direction: str = "inbound") -> FsChannel:
    return FsChannel(uuid=uuid, direction=direction, application=application)


def test_plan_covers_every_case() -> None:
    gone = new_call("A", uuid="c1-gone")
    mine = new_call("A", uuid="c2-mine")
    orphan = new_call("B", uuid="c3-orphan")
    held = new_call("B", uuid="c4-held")
    transferred = dataclasses.replace(new_call("A", uuid="c7-transferred"), state="ended",
                                      end_cause="transferred")
    elsewhere = new_call("B", uuid="c9-elsewhere")
    restarted = new_call("A", uuid="c10-restarted")
    plan = plan_reconciliation(
        "A", [gone, mine, orphan, held, transferred, elsewhere, restarted],
        owners={"c4-held": "B", "c10-restarted": "A", "c1-gone": "A"},
        channels=[_ch("c2-mine"), _ch("c3-orphan", "playback"), _ch("c4-held"),
                  _ch("c5-unknown", "park"), _ch("c6-foreign", "bridge"),
                  _ch("c7-transferred", "bridge"), _ch("c8-bleg", "", "outbound"),
                  _ch("c10-restarted")],
        live_nodes={"B"})
    assert [r.uuid for r in plan.close] == ["c1-gone"]
    assert [(r.record.uuid, r.owner) for r in plan.resume] == [
        ("c10-restarted", "A"), ("c2-mine", None), ("c3-orphan", None)]
    assert plan.resume[2].record.node == "B"
    assert [c.uuid for c in plan.end] == ["c5-unknown"]
    reasons = {s.uuid: s.reason for s in plan.skip}
    assert set(reasons) == {"c4-held", "c6-foreign", "c7-transferred", "c8-bleg"}
    assert "'B' (live)" in reasons["c4-held"] and "transferred" in reasons["c7-transferred"]
    assert not plan.empty


def test_plan_nothing_to_do() -> None:
    assert plan_reconciliation("A", [], {}, []).empty
    plan = plan_reconciliation("A", [new_call("B")], {}, [])
    assert plan.empty and plan.skip == ()


def test_reconcile_reads_the_store(make_store: StoreFactory, fixtures_dir: Path) -> None:
    store = make_store()
    row = _capture_row(fixtures_dir)
    gone = new_call("A")
    resumable = new_call("A", flow_node="ask_account")
    held = new_call("B")
    ended = new_call("A")
    for rec in (gone, resumable, held, ended):
        store.call_started(rec)
    store.call_ended(dataclasses.replace(ended, end_cause="transferred"))
    store.heartbeat("B")
    assert store.flush(5)
    assert store.claim(held.uuid, "B", 5.0)
    body = json.dumps({"row_count": 4, "rows": [
        {**row, "uuid": u} for u in (resumable.uuid, held.uuid, ended.uuid, "not-in-store")]})
    plan = reconcile(store, "A", parse_channels(body))
    assert [r.uuid for r in plan.close] == [gone.uuid]
    assert [(r.record.uuid, r.record.flow_node) for r in plan.resume] == [
        (resumable.uuid, "ask_account")]
    assert [c.uuid for c in plan.end] == ["not-in-store"]
    assert {s.uuid for s in plan.skip} == {held.uuid, ended.uuid}
    # Executing the plan's resume step: the lease is free, so it is taken.
    assert store.takeover_if_expired(resumable.uuid, "A", 5.0)
