"""ASGI middleware: a request-size cap (413), one value per query parameter (400) and security headers
on every response."""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aios.streams.settings import Settings

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


DRAIN_CAP = 16 * 1024 * 1024  # beyond this an oversized upload is cut off rather than read to its end


class BodyLimit:
    """413 for a body over ``limit`` bytes, by Content-Length or, when chunked, while it streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        seen = 0
        over = False

        async def counting_receive() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # End the body here; whatever the app answers to the stub is replaced by a 413.
                    over = True
                    await self._drain(receive, message)
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        rejected = False

        async def guarded_send(message: Message) -> None:
            nonlocal rejected
            if not over:
                await send(message)
            elif not rejected:
                rejected = True
                await self._reject(send)

        await self.app(scope, counting_receive, guarded_send)

    async def _drain(self, receive: Receive, message: Message) -> None:
        """Read the rest of the body (up to a cap) so the client reads our 413 instead of a reset."""
        drained = 0
        while message.get("more_body") and drained < DRAIN_CAP:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over {self.limit} bytes (AIOS_API_MAX_BODY_BYTES)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class SingleQueryValues:
    """400 for a query parameter given more than once. No endpoint takes a list in the query, and
    FastAPI would quietly keep the last of ``?group=a&group=b`` (the schema fuzzer found one such
    request answered 200)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            names = Counter(name for name, _ in parse_qsl(scope["query_string"].decode("latin-1"),
                                                           keep_blank_values=True))
            repeated = sorted(name for name, n in names.items() if n > 1)
            if repeated:
                detail = "; ".join(f"query parameter {name!r} given {names[name]} times" for name in repeated[:5])
                body = json.dumps({"detail": f"{detail}: give each once"}).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.headers = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                        (b"referrer-policy", b"no-referrer"), (b"content-security-policy", CSP.encode()),
                        (b"cross-origin-opener-policy", b"same-origin"),
                        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()")]
        if settings.api.tls_certfile is not None:
            self.headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/v1/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + self.headers
                if api:  # answers carry tenants' data: never cached by a browser or a proxy
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
