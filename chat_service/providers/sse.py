"""A Server-Sent Events parser (WHATWG rules) over raw byte chunks, for Dify and OpenAI streams."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"
MAX_LINE_BYTES = 1024 * 1024  # PROVIDER_MAX_LINE_BYTES: Dify's and OpenAI's frames are a few KiB


class LineTooLong(ValueError):
    """A line (or a frame's data) grew past the parser's bound before it ended."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the stream sent a line longer than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched frame; `data` is None when the frame had no `data:` line (Dify's `event: ping`)."""

    event: str = "message"
    data: str | None = None
    id: str | None = None


class SSEParser:
    """Incremental: `feed` bytes as they arrive, get the frames they end (lines end in CR, LF or CRLF).

    A line, and a frame's data, may hold at most `max_line_bytes`: past it `feed` raises `LineTooLong`
    as soon as the bytes that cross it arrive, so an endless line is never held whole (one provider
    line of 60 MiB, re-joined chunk by chunk, stalled a worker for seconds)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._data_bytes = 0
        self._buffer = b""
        self._started = False
        self._event: str | None = None
        self._data: list[str] | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Frames completed by `chunk`, in order."""
        self._buffer += chunk
        if not self._started:
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return []
            self._buffer = self._buffer.removeprefix(_BOM)
            self._started = True
        events: list[SSEEvent] = []
        for line in self._split_lines(final=False):
            event = self._line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) > self._max:  # the rest of a line that has not ended yet
            raise LineTooLong(self._max)
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: a last line without its terminator is read; an unfinished frame is dropped."""
        events = []
        for line in self._split_lines(final=True):
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._event, self._data, self._id, self._data_bytes = None, None, None, 0
        return events

    def _split_lines(self, final: bool) -> Iterator[bytes]:
        buffer = self._buffer
        start = 0
        while True:
            cr, lf = buffer.find(b"\r", start), buffer.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == len(buffer) and not final:
                    break  # a CR at the end may be half of a CRLF: wait for the next byte
                end, next_start = cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            else:
                end, next_start = lf, lf + 1
            yield buffer[start:end]
            start = next_start
        self._buffer = buffer[start:]
        if final and self._buffer:
            yield self._buffer
            self._buffer = b""

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        if len(raw) > self._max:
            raise LineTooLong(self._max)
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_bytes += len(raw)
            if self._data_bytes > self._max:
                raise LineTooLong(self._max)
            self._data = [*(self._data or []), value]
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        if self._event is None and self._data is None:
            return None
        data = None if self._data is None else "\n".join(self._data)
        event = SSEEvent(event=self._event or "message", data=data, id=self._id)
        self._event, self._data, self._data_bytes = None, None, 0
        return event


def iter_sse(chunks: Iterable[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[SSEEvent]:
    """The SSE frames of a byte stream, each yielded as soon as its closing blank line arrives;
    `LineTooLong` when a line or a frame's data outgrows `max_line_bytes`."""
    parser = SSEParser(max_line_bytes)
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.close()
