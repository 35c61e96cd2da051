"""A streamed HTTP call to a provider: retried before the reply starts, cancellable from any thread."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from chat_service.providers.base import Event, ProviderError
from chat_service.providers.retry import RetryPolicy
from chat_service.providers.sse import MAX_LINE_BYTES, LineTooLong, SSEEvent, iter_sse

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_MAX_ERROR_BODY = 65536


class StreamCut(ProviderError):
    """The stream ended (or the connection dropped) before the provider's terminal event."""

    def __init__(self, message: str = "the provider's stream ended before the reply was complete") -> None:
        super().__init__(message, reason_code="stream_cut")


@dataclass(frozen=True)
class HttpFailure:
    """A provider's HTTP error answer, and whether calling again may help."""

    error: ProviderError
    retryable: bool


@dataclass(frozen=True)
class Call:
    """One streamed POST: where, what, the (connect, read) timeout and the longest line accepted."""

    url: str
    headers: dict = field(repr=False)  # holds the API key: never printed
    body: dict
    timeout: tuple[float, float]
    max_line_bytes: int = MAX_LINE_BYTES


# A provider's wire format: SSE frames in, our events out; raises StreamCut when the stream stops short.
Decoder = Callable[[Iterator[SSEEvent]], Iterator[Event]]
# A provider's reading of an HTTP error answer (status, body bytes).
ErrorReader = Callable[[int, bytes], HttpFailure]


class HttpStream:
    """The `Stream` of an HTTP provider; iterate it once, from one thread."""

    def __init__(
        self,
        session: requests.Session,
        call: Call,
        decode: Decoder,
        read_error: ErrorReader,
        policy: RetryPolicy,
    ) -> None:
        self._session = session
        self._call = call
        self._decode = decode
        self._read_error = read_error
        self._policy = policy
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self._events: Iterator[Event] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[Event]:
        if self._events is None:
            self._events = self._run()
        return self._events

    def __enter__(self) -> HttpStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def cancel(self) -> None:
        """Make iteration end now: wake a blocked read by shutting the socket (urllib3's `shutdown`)."""
        self._cancel.set()
        with self._lock:
            if self._response is None:
                return
            shutdown = getattr(self._response.raw, "shutdown", None) or self._response.close
            # Already closed or released: nothing is left to wake.
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                shutdown()

    def stop(self) -> bool:
        """Cancel; this provider has no stop endpoint, so there is nothing more to tell it."""
        self.cancel()
        return False

    def close(self) -> None:
        """Release the connection; from the iterating thread only."""
        if self._events is not None:
            self._events.close()  # type: ignore[attr-defined]
        self._set_response(None)

    def _set_response(self, response: requests.Response | None) -> None:
        with self._lock:
            if self._response is not None:
                self._response.close()
            self._response = response

    def _run(self) -> Iterator[Event]:
        try:
            yield from self._attempts()
        except ProviderError:
            if not self.cancelled:
                raise  # a failure caused by our own cancel is no failure
        finally:
            self._set_response(None)

    def _attempts(self) -> Iterator[Event]:
        """Up to `policy.tries` calls, while nothing has reached the caller yet."""
        for attempt in range(1, self._policy.tries + 1):
            last = attempt == self._policy.tries
            try:
                response = self._open()
            except _Retry as retry:
                if last:
                    raise retry.error from None
                self._wait(attempt, retry)
                continue
            if response is None:
                return
            yielded = False
            try:
                for event in self._decode(iter_sse(self._chunks(response), self._call.max_line_bytes)):
                    if self.cancelled:
                        return
                    yielded = True
                    self._observe(event)
                    yield event
                return
            except LineTooLong as error:
                # Never retried; the finally below closes the connection with the rest of the line unread.
                raise ProviderError(str(error), reason_code="bad_response") from None
            except StreamCut as cut:
                if yielded or last or self.cancelled:
                    raise
                self._wait(attempt, _Retry(cut))
            finally:
                self._set_response(None)

    def _observe(self, event: Event) -> None:
        """A hook for subclasses that need to remember something of the stream (Dify's task id)."""

    def _wait(self, attempt: int, retry: _Retry) -> None:
        delay = self._policy.delay(attempt, retry.retry_after)
        log.warning(
            "provider call failed (try %d of %d), retrying in %.2fs: %s",
            attempt,
            self._policy.tries,
            delay,
            retry.error.upstream_message,
        )
        self._cancel.wait(delay)

    def _open(self) -> requests.Response | None:
        """The 200 event-stream response, None if cancelled meanwhile; raises `_Retry` or ProviderError."""
        if self.cancelled:
            return None
        call = self._call
        try:
            response = self._session.post(
                call.url, json=call.body, headers=call.headers, stream=True, timeout=call.timeout
            )
        except requests.ReadTimeout:
            raise ProviderError("the provider did not answer in time", reason_code="unavailable") from None
        except requests.ConnectionError as exc:
            message = f"cannot reach the provider: {type(exc).__name__}"
            raise _Retry(ProviderError(message, reason_code="unavailable")) from None
        except requests.RequestException as exc:
            message = f"the provider call failed: {type(exc).__name__}"
            raise ProviderError(message, reason_code="unavailable") from None
        self._set_response(response)
        if self.cancelled:
            self._set_response(None)
            return None
        if response.status_code != 200:
            body = self._error_body(response)
            self._set_response(None)
            failure = self._read_error(response.status_code, body)
            if failure.retryable:
                raise _Retry(failure.error, response.headers.get("Retry-After"))
            raise failure.error
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            body = self._error_body(response)
            self._set_response(None)
            raise self._read_error(response.status_code, body).error
        return response

    @staticmethod
    def _error_body(response: requests.Response) -> bytes:
        try:
            return response.raw.read(_MAX_ERROR_BODY, decode_content=True) or b""
        except (ProtocolError, ReadTimeoutError, OSError):
            return b""

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        """The body as it arrives (`read1`: whatever is there, no waiting for a full buffer)."""
        raw = response.raw
        while True:
            try:
                data = raw.read1(_READ_SIZE, decode_content=True)
            except ReadTimeoutError:
                if self.cancelled:
                    return
                message = "the provider stopped sending (read timeout)"
                raise ProviderError(message, reason_code="unavailable") from None
            except (ProtocolError, OSError, ValueError):
                if self.cancelled:
                    return
                raise StreamCut("the connection to the provider was cut mid-reply") from None
            if not data:
                return
            yield data


def max_line_bytes(config: Mapping[str, Any]) -> int:
    """`PROVIDER_MAX_LINE_BYTES`: past it a stream's line fails the turn (`bad_response`)."""
    return int(config.get("PROVIDER_MAX_LINE_BYTES", MAX_LINE_BYTES))


def provider_timeout(config: Mapping[str, Any]) -> tuple[float, float]:
    """(connect, read) seconds; the read part must stay well above Dify's 10 s ping interval."""
    return (
        float(config.get("PROVIDER_CONNECT_TIMEOUT_SECONDS", 5.0)),
        float(config.get("PROVIDER_READ_TIMEOUT_SECONDS", 60.0)),
    )


class _Retry(Exception):
    """A failure that another call may cure."""

    def __init__(self, error: ProviderError, retry_after: str | None = None) -> None:
        super().__init__(error.upstream_message)
        self.error = error
        self.retry_after = retry_after


def json_object(body: bytes) -> dict:
    """An error body as a dict ({} when it is not a JSON object)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
