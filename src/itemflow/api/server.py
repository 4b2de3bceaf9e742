"""How uvicorn serves the API: httptools, with the limits it lacks for hostile connections.

httptools has no limit on the size of a request's head (request line and header fields) and
uvicorn arms no timer while one is arriving: a client could grow a header without end, or keep
a connection by sending a byte now and then (even bare CRLFs between requests, which the parser
skips). The protocol below adds both, for about 1 us a request (a GET costs ~150 us):

- a head larger than `max_header_bytes` gets 431 and the connection is closed; a head still
  incomplete past the limit is refused as it arrives, so it never holds more than the limit
  plus a read or two (256 KiB each);
- a head must be complete `header_timeout_seconds` after its first byte (or after any byte
  received between requests), else the connection is dropped;
- a connection with nothing to do (fresh, or after a response) is closed after
  `keep_alive_timeout_seconds` (uvicorn arms that only after a response; here also on open).

h11, uvicorn's pure-Python parser, has a size cap (h11_max_incomplete_event_size) but answers
it with 400, not 431, and has no head deadline either.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from itemflow.settings import Settings


class _HeadTooLarge(Exception):
    """Raised inside the parser's callback to stop parsing; httptools wraps it."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    head_timeout = 10.0
    _431 = b""  # the problem+json body, built once per limit (see `uvicorn_options`)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._reads = 0  # data_received calls so far
        self._read_len = 0  # size of the current one
        self._head_read = 0  # the read in which the current head began
        self._head_bytes = 0  # bytes of an incomplete head, counted by whole reads
        self._in_head = False  # a request has begun and its head is not complete
        self._between = True  # no request in progress: waiting for the next head
        self._boundary = False  # a head or a message ended during the current read
        self._too_large = False
        self._head_timer: asyncio.TimerHandle | None = None
        # A connection that never sends anything is idle too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        # Base calls are spelled out, not super(): these run on every request.
        self._reads += 1
        self._read_len = len(data)
        self._boundary = False
        HttpToolsProtocol.data_received(self, data)  # runs the parser callbacks below
        if self._in_head or (self._between and not self._boundary):
            if self.transport.is_closing():
                return
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
            if not self._boundary:  # a read that ended a request is not counted (bounded undercount)
                self._head_bytes += len(data)
                if self._head_bytes > self.max_head_bytes:
                    self._refuse_head()

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_read = self._reads
        HttpToolsProtocol.on_message_begin(self)

    def on_headers_complete(self) -> None:
        # Measured only when the head did not come in one read below the limit (the fast path).
        if ((self._head_read != self._reads or self._read_len > self.max_head_bytes)
                and self._head_size() > self.max_head_bytes):
            self._too_large = True
            raise _HeadTooLarge  # uvicorn catches the parser error and calls send_400_response
        self._in_head = self._between = False
        self._boundary = True
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._between = self._boundary = True
        HttpToolsProtocol.on_message_complete(self)

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self._too_large = True
        if self.cycle is None or self.cycle.response_complete:  # else a pipelined head: just close
            head = [STATUS_LINE[431]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [b"content-type: application/problem+json\r\n",
                     b"content-length: %d\r\n" % len(self._431), b"connection: close\r\n\r\n"]
            self.transport.write(b"".join(head) + self._431)
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config: the protocol and its limits."""
    detail = f"the request line and headers are larger than {settings.max_header_bytes} bytes"
    protocol = type("HttpProtocol", (GuardedHttpToolsProtocol,), {
        "max_head_bytes": settings.max_header_bytes,
        "head_timeout": settings.header_timeout_seconds,
        "_431": json.dumps({"type": "about:blank", "title": "Request header fields too large",
                            "status": 431, "detail": detail}).encode(),
    })
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_timeout_seconds}
