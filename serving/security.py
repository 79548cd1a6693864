"""Admin authentication and the request-body size limit.

Admin actions (reload, routing, promotion) change what every customer is scored by, so they
need the key set in ``FRAUDOPS_ADMIN_API_KEY``, sent as ``X-API-Key``. With no key configured
the admin endpoints are disabled (403) rather than open: a forgotten setting must fail safe.
Keys are compared with ``hmac.compare_digest`` so the time taken reveals nothing about how
much of a guess was right.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"

_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="The admin key (FRAUDOPS_ADMIN_API_KEY). Admin endpoints are off without one.",
)


def require_admin(request: Request, supplied: str | None = Security(_api_key_header)) -> None:
    """Let the request through only with the configured admin key."""
    configured = request.app.state.admin_key
    if configured is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "admin endpoints are disabled: set FRAUDOPS_ADMIN_API_KEY to enable them",
        )
    if not supplied:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
    if not hmac.compare_digest(supplied.encode(), configured.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"wrong {API_KEY_HEADER}")


def is_admin(request: Request) -> bool:
    """Whether the request carries the configured admin key, for an open endpoint that
    shows admins more (``GET /v1/models``: the routing salt). Never true with no key set."""
    configured = request.app.state.admin_key
    supplied = request.headers.get(API_KEY_HEADER)
    if configured is None or not supplied:
        return False
    return hmac.compare_digest(supplied.encode(), configured.encode())


class BodyTooLarge(Exception):
    """A request body went past the limit while it was being read."""


class BodySizeLimit:
    """Answer 413 to a body over ``max_bytes``, before the application reads it whole.

    A declared ``Content-Length`` is refused at once; a chunked body is counted as it
    arrives and cut off at the limit, so a client cannot make the server buffer gigabytes.
    Pure ASGI rather than ``BaseHTTPMiddleware``, which costs a task per request.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = f'{{"detail":"request body larger than {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status.HTTP_413_CONTENT_TOO_LARGE,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def content_length(scope: Scope) -> int | None:
    """The declared body size, or None when absent or not a number (chunked bodies)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
