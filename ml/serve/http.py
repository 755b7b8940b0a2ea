"""What every route shares: the request rules (content type, body size), the metrics per request,
the error bodies of each API, and dropping work for clients that went away.

Error bodies: the V2 protocol's are ``{"error": "..."}`` (every path under ``/v2``, whatever the
status); the other routes' are ``{"detail": "..."}``, or for ``/v1`` values that fail validation
``{"detail": [{"loc", "msg", "type"}, ...]}`` as FastAPI writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.responses import Response

from ml.serve.metrics import ServeMetrics
from ml.serve.v2 import HEADER_LENGTH

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")

#: The status counted for a request whose client disconnected before its answer (nginx's).
CLIENT_CLOSED = 499

#: The most of an unwanted request body read (and discarded) so that the client sees the answer.
#: Clients such as ``urllib`` and ``requests`` write the whole body before reading: closing the
#: connection while they still send makes them report a reset instead of the 413 (or 415). Beyond
#: this much (or ``_DRAIN_SECONDS``) the connection is closed anyway: a bound on wasted work.
_DRAIN_BYTES = 64 * 1024 * 1024
_DRAIN_SECONDS = 10.0


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status, media_type="application/json")


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_response(path: str, status: int, message: str) -> Response:
    """The error body of the API ``path`` belongs to."""
    return json_response({"error": message} if is_v2(path) else {"detail": message}, status)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes ``ML_MAX_BODY_BYTES`` (an HTTPException, so that
    FastAPI's body reading passes it on instead of calling it a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (ML_MAX_BODY_BYTES)")


class BodyTimedOut(HTTPException):
    """Raised from ``receive`` when a body is not complete ``ML_BODY_TIMEOUT_S`` after its headers."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body not complete within {seconds:g} s (ML_BODY_TIMEOUT_S)")


class ClientDisconnected(Exception):
    """The client closed its connection before its answer was ready."""


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` (the model call of a request whose body has been read) unless the client goes
    away first: then ``work`` is cancelled, which drops its rows not yet predicted, and
    :class:`ClientDisconnected` is raised (counted as 499)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientDisconnected
    return task.result()


async def _disconnect(receive: Receive) -> None:
    """Returns when the server reports the connection closed (the body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ObserveMiddleware:
    """Latency and status per route template (bounded label values), and the request rules: JSON
    bodies only (V2 also takes no content type and binary tensor data, as its clients send them),
    at most ``ML_MAX_BODY_BYTES`` of them, complete within ``ML_BODY_TIMEOUT_S`` of the headers, and
    an answer sent before the body is read is sent only after the rest of the body (up to a bound)
    has been read. A request whose client disconnected
    before its answer is counted with status 499, not as a server error.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs far more per request.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        metrics: ServeMetrics,
        max_body_bytes: int,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        received = 0
        body_done = scope["method"] in ("GET", "HEAD")
        disconnected = responded = timed_out = False
        headers = dict(scope["headers"])
        body_deadline = asyncio.get_running_loop().time() + self.body_timeout_s

        async def limited_receive() -> Message:
            nonlocal received, body_done, disconnected, timed_out
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)  # before reading: no 100 Continue for such a body
            if body_done:  # waiting for a disconnect while the model works: no deadline
                message = await receive()
            else:
                try:
                    async with asyncio.timeout_at(body_deadline):
                        message = await receive()
                except TimeoutError:
                    timed_out = True
                    raise BodyTimedOut(self.body_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            else:
                body_done = True
                disconnected = disconnected or (message["type"] == "http.disconnect" and not responded)
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                if timed_out:  # not waited for again: the connection closes after the answer
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
                elif not body_done:
                    await self._drain(receive, headers, received)
            elif not message.get("more_body", False):
                responded = True
            await send(message)

        try:
            if scope["method"] == "POST" and not _acceptable_body(scope["path"], headers):
                v2 = " (V2 also takes no content type, or application/octet-stream with binary data)"
                message = "Content-Type must be application/json" + (v2 if is_v2(scope["path"]) else "")
                await error_response(scope["path"], 415, message)(scope, limited_receive, observed_send)
            else:
                await self.app(scope, limited_receive, observed_send)
        finally:
            if disconnected and (status >= 500 or status == CLIENT_CLOSED or not responded):
                status = CLIENT_CLOSED
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(template, scope["method"]).observe(time.perf_counter() - started)
            self.metrics.requests.labels(template, str(status)).inc()

    @staticmethod
    async def _drain(receive: Receive, headers: dict[bytes, bytes], received: int) -> None:
        """Read and drop the rest of the body, unless it is bigger than the bound or the client
        waits for ``100 Continue`` before sending it (then it is never sent)."""
        declared = headers.get(b"content-length", b"")
        if b"100-continue" in headers.get(b"expect", b"").lower() and received == 0:
            return
        if declared.isdigit() and int(declared) > _DRAIN_BYTES:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_SECONDS):
                while received <= _DRAIN_BYTES:
                    message = await receive()
                    received += len(message.get("body", b""))
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return


def _acceptable_body(path: str, headers: dict[bytes, bytes]) -> bool:
    value = headers.get(b"content-type")
    if value is None:
        return is_v2(path)  # V2 clients (tritonclient) send JSON without a content type
    media = value.split(b";", 1)[0].strip().lower()
    if media == b"application/octet-stream":
        return is_v2(path) and HEADER_LENGTH.encode() in headers
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
