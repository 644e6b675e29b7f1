"""SSE parser and stream-chunk decoder: exact cases, byte-at-a-time, and fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callctl.dialog.llm_stream import Chunk, LlmError, ToolDelta, decode_chunk
from callctl.dialog.sse import SseError, SseEvent, SseParser

STREAM = (
    b"\xef\xbb\xbf: keep-alive comment\r\n"
    b"data: {\"a\": 1}\r\n\r\n"
    b"event: update\nid: 7\ndata: line one\ndata:line two\n\n"
    b"retry: 100\nunknown: x\n\n"            # no data: nothing dispatched
    b"data\n\n"                              # field with no colon: empty data line
    b"data: [DONE]\r\r"
)
EVENTS = [
    SseEvent('{"a": 1}'),
    SseEvent("line one\nline two", "update", "7"),
    SseEvent("", id="7"),                   # the last event id persists (WHATWG)
    SseEvent("[DONE]", id="7"),
]


def feed_all(parser: SseParser, chunks: list[bytes]) -> list[SseEvent]:
    out: list[SseEvent] = []
    for c in chunks:
        out += parser.feed(c)
    return out + parser.close()


def test_whole_stream() -> None:
    assert feed_all(SseParser(), [STREAM]) == EVENTS


def test_byte_at_a_time() -> None:
    assert feed_all(SseParser(), [STREAM[i:i + 1] for i in range(len(STREAM))]) == EVENTS


def test_trailing_event_without_blank_line_is_kept_at_close() -> None:
    p = SseParser()
    assert p.feed(b"data: [DONE]") == []
    assert p.close() == [SseEvent("[DONE]")]
    with pytest.raises(SseError):
        p.feed(b"more")


def test_bad_utf8_and_long_line() -> None:
    with pytest.raises(SseError, match="not UTF-8"):
        SseParser().feed(b"data: \xff\xfe\n")
    with pytest.raises(SseError, match="longer than"):
        SseParser(max_line=64).feed(b"data: " + b"x" * 100)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_fuzz_sse_parser(chunks: list[bytes]) -> None:
    p = SseParser(max_line=256)
    try:
        events = feed_all(p, chunks)
    except SseError:
        return
    assert all(isinstance(e, SseEvent) and isinstance(e.data, str) for e in events)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"data: ", b"event: x", b"\n", b"\r", b"\r\n", b":c",
                                 b'{"choices": []}', b"id: 1"]), max_size=30),
       st.integers(1, 7))
def test_fuzz_split_points_do_not_change_events(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    whole = feed_all(SseParser(), [data])
    pieces = feed_all(SseParser(), [data[i:i + step] for i in range(0, len(data), step)])
    assert whole == pieces


def test_decode_chunk_cases() -> None:
    assert decode_chunk('{"choices": [{"delta": {"content": "Hi"}}]}') == Chunk("Hi")
    assert decode_chunk('{"choices": [], "usage": {}}') == Chunk()
    got = decode_chunk('{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", '
                       '"function": {"name": "hangup", "arguments": ""}}]}, '
                       '"finish_reason": "tool_calls"}]}')
    assert got == Chunk("", (ToolDelta(0, "c1", "hangup", ""),), "tool_calls")
    for bad in ["", "[]", "{", '{"choices": "x"}', '{"choices": [{"delta": 3}]}',
                '{"choices": [{"delta": {"content": 5}}]}', '{"error": "boom"}',
                '{"choices": [{"delta": {"tool_calls": [{"index": "a"}]}}]}']:
        with pytest.raises(LlmError):
            decode_chunk(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["choices", "delta", "content", "tool_calls", "index",
                                       "function", "name", "arguments", "id", "error",
                                       "finish_reason"]), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), json_values.map(json.dumps)))
def test_fuzz_decode_chunk(data: str) -> None:
    try:
        chunk = decode_chunk(data)
    except LlmError:
        return
    assert isinstance(chunk.content, str)
    assert all(isinstance(t.index, int) and isinstance(t.arguments, str)
               for t in chunk.tool_calls)
