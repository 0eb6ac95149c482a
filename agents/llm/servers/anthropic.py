"""A real local HTTP server speaking the Anthropic Messages wire format, scriptable per test.

The real ``anthropic`` SDK is pointed at it, so tests exercise the SDK's HTTP, SSE parsing and
retry logic rather than a mock of it (same shape as ``tests.fakes.openai_server``)::

    with FakeAnthropic() as server:
        server.script(status(429, retry_after=0.05), ok("hello"))
        client = AsyncAnthropic(api_key="test", base_url=server.base_url)
        ...
        assert server.requests[0].headers["x-api-key"] == "test"

Each request consumes the next scripted behaviour; when the script is empty the default reply is
``ok()``: a deterministic text derived from the last user message. Token counts are whitespace
words: input counts the system prompt and every message, output the reply.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from aios.agents.llm.servers.scripted import RecordedRequest, ScriptedServer

MESSAGES_PATH = "/v1/messages"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Behaviour:
    """How the server answers one request. Build these with the helper functions below."""

    status: int = 200
    text: str | None = None  # None: derive the reply from the request
    first_token_delay: float = 0.0
    malformed: bool = False
    truncated: bool = False  # stream stops after the text, without message_delta/message_stop
    stream_error: str | None = None  # an `event: error` of this type after the first text delta
    cache_read_input_tokens: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None  # the error body for non-200 statuses
    tool_calls: tuple[tuple[str, dict[str, Any] | str], ...] = ()  # (name, input): tool_use blocks, no text


def tool_call(name: str, **arguments: Any) -> Behaviour:
    """Answer with a tool_use block for ``name`` (streamed as the API does: content_block_start,
    input_json_delta fragments, stop_reason ``tool_use``)."""
    return Behaviour(tool_calls=((name, arguments),))


def raw_tool_call(name: str, arguments: str) -> Behaviour:
    """Like :func:`tool_call`, with the arguments' JSON text as given (it may be anything)."""
    return Behaviour(tool_calls=((name, arguments),))


def ok(text: str | None = None, *, cache_read_input_tokens: int = 0) -> Behaviour:
    """Answer successfully with ``text``; ``cache_read_input_tokens`` of the input come from cache."""
    return Behaviour(text=text, cache_read_input_tokens=cache_read_input_tokens)


def slow_first_token(seconds: float, text: str | None = None) -> Behaviour:
    """Answer successfully, but wait ``seconds`` after the headers before the first token."""
    return Behaviour(text=text, first_token_delay=seconds)


def malformed() -> Behaviour:
    """Answer 200 with data that is not valid JSON (in an SSE event when streaming)."""
    return Behaviour(malformed=True)


def truncated(text: str = "cut short") -> Behaviour:
    """Stream the text but stop before message_delta and message_stop."""
    return Behaviour(text=text, truncated=True)


def stream_error(error_type: str = "overloaded_error", text: str = "partial") -> Behaviour:
    """Start a 200 stream, then send an ``event: error`` of ``error_type``, as the real API does."""
    return Behaviour(text=text, stream_error=error_type)


def status(
    code: int, *, retry_after: float | None = None, error_type: str | None = None, message: str | None = None
) -> Behaviour:
    """Answer with HTTP ``code`` and an Anthropic error body; ``retry_after`` sets the header."""
    headers = [("request-id", f"req_fake_{code}")]
    if retry_after is not None:
        headers.append(("retry-after", f"{retry_after:g}"))
    kind = error_type or _ERROR_TYPES.get(code, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message or f"fake error {code}"}}
    return Behaviour(status=code, headers=tuple(headers), body=body)


def overloaded() -> Behaviour:
    """Answer 529 with Anthropic's overloaded_error body."""
    return status(529, error_type="overloaded_error", message="Overloaded")


def context_too_long() -> Behaviour:
    """Answer 400 with the API's error for a prompt over the context window."""
    return status(400, message="prompt is too long: 215337 tokens > 200000 maximum")


def default_reply(body: dict[str, Any]) -> str:
    """The deterministic reply for a request: echoes the start of its last user message."""
    last_user = next(
        (_text(m.get("content")) for m in reversed(body.get("messages", [])) if m.get("role") == "user"), ""
    )
    return f"fake-anthropic reply to: {' '.join(last_user.split()[:12])}"


class FakeAnthropic(ScriptedServer[Behaviour]):
    """The server: ``start()``, ``stop()``, ``base_url``, ``requests``, ``script(*behaviours)``."""

    name = "fake-anthropic"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    def default(self) -> Behaviour:
        return ok()

    @property
    def base_url(self) -> str:
        """The URL to give the SDK as ``base_url`` (the SDK appends /v1/messages)."""
        return self._url("")


def _handler_for(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(_MessagesHandler):
        server_fake = fake

    return Handler


class _MessagesHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as the real API
    disable_nagle_algorithm = True  # each SSE event goes out at once, not after a delayed ACK (~40 ms)
    timeout = 10  # idle keep-alive connections end instead of pinning a thread
    server_fake: FakeAnthropic

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        request = RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        behaviour = self.server_fake._next(request)
        if self.path != MESSAGES_PATH:
            error = {"type": "not_found_error", "message": f"no route {self.path}"}
            self._send_json(404, {"type": "error", "error": error})
        elif behaviour.status != 200:
            self._send_json(behaviour.status, behaviour.body or {}, behaviour.headers)
        elif body.get("stream"):
            self._stream(body, behaviour)
        elif behaviour.malformed:
            self._send_raw(200, b"{this is not json", "application/json")
        else:
            time.sleep(behaviour.first_token_delay)
            text = _reply(body, behaviour)
            self._send_json(200, _message(body, text, _usage(body, text, behaviour)))

    def _stream(self, body: dict[str, Any], behaviour: Behaviour) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        if behaviour.malformed:
            self._chunk(b"event: message_start\ndata: {this is not json\n\n")
            self._chunk(b"")
            return
        text = "" if behaviour.tool_calls else _reply(body, behaviour)
        usage = _usage(body, text, behaviour)
        start_usage = {**usage, "output_tokens": 1}  # the real API reports a token or so up front
        self._event("message_start", {"type": "message_start", "message": _message(body, "", start_usage)})
        if behaviour.tool_calls:
            self._tool_use(behaviour, usage)
            return
        self._event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        self._event("ping", {"type": "ping"})
        time.sleep(behaviour.first_token_delay)
        for piece in _pieces(text):
            delta = {"type": "text_delta", "text": piece}
            self._event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            if behaviour.stream_error:
                error = {"type": behaviour.stream_error, "message": "fake mid-stream error"}
                self._event("error", {"type": "error", "error": error})
                break
        if not behaviour.stream_error and not behaviour.truncated:
            self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
            self._event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
            self._event("message_stop", {"type": "message_stop"})
        self._chunk(b"")  # the terminating zero-length chunk

    def _tool_use(self, behaviour: Behaviour, usage: dict[str, int]) -> None:
        for i, (name, arguments) in enumerate(behaviour.tool_calls):
            block = {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}}
            self._event("content_block_start", {"type": "content_block_start", "index": i, "content_block": block})
            encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
            for fragment in (encoded[: len(encoded) // 2], encoded[len(encoded) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": fragment}
                self._event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
            self._event("content_block_stop", {"type": "content_block_stop", "index": i})
        self._event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                      "usage": {"output_tokens": 5}})
        self._event("message_stop", {"type": "message_stop"})
        self._chunk(b"")

    def _event(self, name: str, obj: dict[str, Any]) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_json(self, code: int, obj: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._send_raw(code, json.dumps(obj).encode(), "application/json", headers)

    def _send_raw(
        self, code: int, data: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _text(content: object) -> str:
    # Content is a string or a list of blocks; only text blocks count.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def _reply(body: dict[str, Any], behaviour: Behaviour) -> str:
    return behaviour.text if behaviour.text is not None else default_reply(body)


def _pieces(text: str) -> list[str]:
    # Word-sized deltas, as a real model streams them; whitespace stays attached.
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)] if text else []


def _usage(body: dict[str, Any], text: str, behaviour: Behaviour) -> dict[str, int]:
    prompt = len(_text(body.get("system")).split())
    prompt += sum(len(_text(m.get("content")).split()) for m in body.get("messages", []))
    cached = min(behaviour.cache_read_input_tokens, prompt)
    # As the real API: input_tokens excludes the tokens read from (or written to) the cache.
    return {
        "input_tokens": prompt - cached,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
        "output_tokens": len(text.split()),
    }


def _message(body: dict[str, Any], text: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": "end_turn" if text else None,
        "stop_sequence": None,
        "usage": usage,
    }
