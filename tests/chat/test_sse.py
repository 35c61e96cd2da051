"""The SSE parser: frames, pings without data, multi-line data, CR/LF/CRLF, comments, split chunks,
and the bound on a line."""

from __future__ import annotations

import pytest

from chat_service.providers.sse import MAX_LINE_BYTES, LineTooLong, SSEEvent, SSEParser, iter_sse


def parse(*chunks: bytes) -> list[SSEEvent]:
    return list(iter_sse(chunks))


def test_frames_are_separated_by_a_blank_line():
    assert parse(b'data: {"a":1}\n\ndata: {"b":2}\n\n') == [
        SSEEvent(data='{"a":1}'),
        SSEEvent(data='{"b":2}'),
    ]


def test_a_ping_without_data_is_an_event_with_no_data():
    assert parse(b"event: ping\n\ndata: x\n\n") == [SSEEvent("ping", None), SSEEvent(data="x")]


def test_multi_line_data_is_joined_with_newlines():
    assert parse(b"event: message\ndata: first\ndata:second\ndata\n\n") == [
        SSEEvent("message", "first\nsecond\n")
    ]


def test_only_one_leading_space_is_removed():
    assert parse(b"data:  two spaces\n\n") == [SSEEvent(data=" two spaces")]


def test_crlf_and_cr_line_endings():
    assert parse(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [
        SSEEvent(data="a"),
        SSEEvent(data="b"),
        SSEEvent(data="c"),
    ]


def test_a_crlf_split_across_chunks_is_one_line_break():
    assert parse(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == [SSEEvent(data="a"), SSEEvent(data="b")]


def test_comments_are_ignored():
    assert parse(b": keep-alive\n\n:another\ndata: x\n: inside\n\n") == [SSEEvent(data="x")]


def test_byte_by_byte_feeding_gives_the_same_frames_and_utf8():
    raw = 'event: ping\n\ndata: {"answer":"你好 👋"}\r\n\r\n'.encode()
    parser = SSEParser()
    events = [event for i in range(len(raw)) for event in parser.feed(raw[i : i + 1])]
    assert events + parser.close() == [SSEEvent("ping", None), SSEEvent(data='{"answer":"你好 👋"}')]


def test_each_frame_is_dispatched_as_soon_as_its_blank_line_arrives():
    parser = SSEParser()
    assert parser.feed(b"data: one\n") == []
    assert parser.feed(b"\n") == [SSEEvent(data="one")]


def test_an_unfinished_frame_at_the_end_is_dropped():
    assert parse(b"data: done\n\ndata: half") == [SSEEvent(data="done")]


def test_a_byte_order_mark_at_the_start_is_skipped():
    assert parse(b"\xef\xbb", b"\xbfdata: x\n\n") == [SSEEvent(data="x")]


def test_id_is_kept_and_unknown_fields_ignored():
    assert parse(b"id: 7\nretry: 100\nfoo: bar\ndata: x\n\n") == [SSEEvent(data="x", id="7")]


# --- the bound on a line (PROVIDER_MAX_LINE_BYTES) ---------------------------------------------------


def test_a_line_up_to_the_bound_is_read():
    line = b"data: " + b"x" * 94
    assert parse_bounded(100, line + b"\n\n") == [SSEEvent(data="x" * 94)]


def test_a_line_past_the_bound_fails_as_soon_as_it_crosses_it_before_it_ends():
    """The line is never held whole: the chunk that crosses the bound raises, its end never comes."""
    parser = SSEParser(max_line_bytes=1000)
    assert parser.feed(b"data: " + b"x" * 900) == []
    with pytest.raises(LineTooLong):
        parser.feed(b"x" * 200)


def test_a_line_past_the_bound_fails_also_when_it_arrives_in_one_chunk_with_its_end():
    with pytest.raises(LineTooLong):
        parse_bounded(100, b"data: ok\n\ndata: " + b"x" * 200 + b"\n\n")


def test_a_frame_of_many_short_data_lines_past_the_bound_fails():
    with pytest.raises(LineTooLong):
        parse_bounded(100, b"data: 0123456789\n" * 20 + b"\n")


def test_the_bound_counts_each_frame_anew():
    frame = b"data: " + b"x" * 60 + b"\n\n"
    assert len(parse_bounded(100, frame * 50)) == 50


def test_the_default_bound_is_one_mebibyte():
    assert MAX_LINE_BYTES == 1024 * 1024
    assert parse(b"data: " + b"x" * (MAX_LINE_BYTES - 6) + b"\n\n")[0].data == "x" * (MAX_LINE_BYTES - 6)
    with pytest.raises(LineTooLong):
        parse(b"data: " + b"x" * MAX_LINE_BYTES)


def parse_bounded(limit: int, *chunks: bytes) -> list[SSEEvent]:
    return list(iter_sse(chunks, max_line_bytes=limit))
