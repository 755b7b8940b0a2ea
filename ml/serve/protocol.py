"""uvicorn's h11 HTTP protocol with a size limit and a deadline for each request head.

The size limit, ``ML_MAX_HEADER_BYTES``, is h11's ``max_incomplete_event_size`` (uvicorn answers
a generic 400 when it is passed), measured here as well because h11 only applies it while a head is
incomplete: a head over the limit is a 431 naming it, and the connection is closed. The
deadline has no setting in uvicorn or h11: the keep-alive timer stops at a connection's first byte,
so a client trickling header lines held its connection for as long as it liked. Each head must now
be complete within ``ML_HEADER_TIMEOUT_S`` of the connection opening or the previous answer, or the
connection is answered 408 and closed. (httptools, uvicorn's faster parser, has no head size limit
at all, hence h11.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _plain(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    return head.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body


def guarded_protocol(max_header_bytes: int, header_timeout_s: float) -> type[H11Protocol]:
    """The protocol class for ``uvicorn.run(http=...)`` (with ``h11_max_incomplete_event_size``)."""

    class GuardedH11Protocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE and self._head_size(data) > max_header_bytes:
                text = f"request line and headers larger than {max_header_bytes} bytes (ML_MAX_HEADER_BYTES)"
                self.transport.write(_plain(431, "Request Header Fields Too Large", text))
                self.transport.close()
                return
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the head is complete (or the connection failed)

        def _head_size(self, data: bytes) -> int:
            """The bytes of the request head received so far (all of it when it is complete).

            h11's own limit only applies while a head is incomplete: one that arrives within a
            single read (64 KiB) would pass it, so the head is measured here.
            """
            buffered = self.conn.trailing_data[0]
            head = buffered + data if buffered else data
            end = head.find(b"\r\n\r\n")
            return end + 4 if end >= 0 else len(head)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request's head

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_deadline = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_timed_out(self) -> None:
            self._head_deadline = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.trailing_data[0]:  # a head begun and not finished: say why it is closed
                text = f"request headers not complete within {header_timeout_s:g} s (ML_HEADER_TIMEOUT_S)"
                self.transport.write(_plain(408, "Request Timeout", text))
            self.transport.close()

    return GuardedH11Protocol
