"""A real local HTTP server speaking the OpenAI Chat Completions wire format, scriptable per test.

The real ``openai`` SDK is pointed at it, so tests exercise the SDK's HTTP, SSE parsing and retry
logic rather than a mock of it::

    with FakeOpenAI() as server:             # or server = FakeOpenAI().start(); ...; server.stop()
        server.script(status(429, retry_after=0.05), ok("hello"))
        client = AsyncOpenAI(api_key="test", base_url=server.base_url)
        ...
        assert server.requests[0].body["stream"] is True

Each request consumes the next scripted behaviour; when the script is empty the default reply is
``ok()``: a deterministic text derived from the last user message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from aios.agents.llm.servers.scripted import RecordedRequest, ScriptedServer

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"


@dataclass(frozen=True)
class Behaviour:
    """How the server answers one request. Build these with the helper functions below."""

    status: int = 200
    text: str | None = None  # None: derive the reply from the request
    first_token_delay: float = 0.0
    malformed: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None  # the error body for non-200 statuses
    tool_calls: tuple[tuple[str, dict[str, Any] | str], ...] = ()  # (name, arguments): call tools, no text


def tool_call(name: str, **arguments: Any) -> Behaviour:
    """Answer with a call of tool ``name`` (streamed as the API does: id and name, then the
    arguments' JSON in fragments, finish_reason ``tool_calls``)."""
    return Behaviour(tool_calls=((name, arguments),))


def raw_tool_call(name: str, arguments: str) -> Behaviour:
    """Like :func:`tool_call`, with the arguments' JSON text as given (it may be anything)."""
    return Behaviour(tool_calls=((name, arguments),))


def ok(text: str | None = None) -> Behaviour:
    """Answer successfully with ``text`` (default: a reply derived from the last user message)."""
    return Behaviour(text=text)


def slow_first_token(seconds: float, text: str | None = None) -> Behaviour:
    """Answer successfully, but wait ``seconds`` after the headers before the first token."""
    return Behaviour(text=text, first_token_delay=seconds)


def malformed() -> Behaviour:
    """Answer 200 with data that is not valid JSON (in an SSE event when streaming)."""
    return Behaviour(malformed=True)


def status(
    code: int, *, retry_after: float | None = None, error_code: str | None = None, message: str | None = None
) -> Behaviour:
    """Answer with HTTP ``code`` and an OpenAI-style error body; ``retry_after`` sets the header."""
    headers = (("retry-after", f"{retry_after:g}"),) if retry_after is not None else ()
    body = {
        "error": {
            "message": message or f"fake error {code}",
            "type": "invalid_request_error" if code < 500 else "server_error",
            "param": None,
            "code": error_code,
        }
    }
    return Behaviour(status=code, headers=headers, body=body)


def context_too_long() -> Behaviour:
    """Answer 400 with OpenAI's context_length_exceeded error."""
    return status(
        400,
        error_code="context_length_exceeded",
        message="This model's maximum context length is 128000 tokens.",
    )


def default_reply(body: dict[str, Any]) -> str:
    """The deterministic reply for a request: echoes the start of its last user message."""
    last_user = next(
        (str(m.get("content", "")) for m in reversed(body.get("messages", [])) if m.get("role") == "user"), ""
    )
    return f"fake-openai reply to: {' '.join(last_user.split()[:12])}"


class FakeOpenAI(ScriptedServer[Behaviour]):
    """The server: ``start()``, ``stop()``, ``base_url``, ``requests``, ``script(*behaviours)``."""

    name = "fake-openai"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    def default(self) -> Behaviour:
        return ok()

    @property
    def base_url(self) -> str:
        """The URL to give the SDK as ``base_url`` (ends in /v1)."""
        return self._url("/v1")


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(_ChatHandler):
        server_fake = fake

    return Handler


class _ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as the real API
    disable_nagle_algorithm = True  # each SSE event goes out at once, not after a delayed ACK (~40 ms)
    timeout = 10  # idle keep-alive connections end instead of pinning a thread
    server_fake: FakeOpenAI

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
        if self.path not in (CHAT_PATH, EMBEDDINGS_PATH):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        elif behaviour.status != 200:
            self._send_json(behaviour.status, behaviour.body or {}, behaviour.headers)
        elif self.path == EMBEDDINGS_PATH:
            self._send_json(200, _embeddings(body))
        elif body.get("stream"):
            self._stream(body, behaviour)
        elif behaviour.malformed:
            self._send_raw(200, b"{this is not json", "application/json")
        else:
            time.sleep(behaviour.first_token_delay)
            self._send_json(200, _completion(body, _reply(body, behaviour)))

    def _stream(self, body: dict[str, Any], behaviour: Behaviour) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        if behaviour.malformed:
            self._chunk(b"data: {this is not json\n\n")
        else:
            time.sleep(behaviour.first_token_delay)
            text = "" if behaviour.tool_calls else _reply(body, behaviour)
            self._event(_chunk_obj(body, {"role": "assistant", "content": None if behaviour.tool_calls else ""}, None))
            for piece in _pieces(text):
                self._event(_chunk_obj(body, {"content": piece}, None))
            for i, (name, arguments) in enumerate(behaviour.tool_calls):
                head = {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": ""}}
                self._event(_chunk_obj(body, {"tool_calls": [head]}, None))
                encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
                for fragment in (encoded[: len(encoded) // 2], encoded[len(encoded) // 2 :]):
                    self._event(_chunk_obj(body, {"tool_calls": [{"index": i, "function": {"arguments": fragment}}]},
                                           None))
            self._event(_chunk_obj(body, {}, "tool_calls" if behaviour.tool_calls else "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage_chunk = _chunk_obj(body, None, None)
                usage_chunk["usage"] = _usage(body, text)
                self._event(usage_chunk)
            self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")  # the terminating zero-length chunk

    def _event(self, obj: dict[str, Any]) -> None:
        self._chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

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


def fake_embedding(text: str, dimensions: int) -> list[float]:
    """The deterministic (not normalised) vector the fake returns for ``text``: equal texts, equal vectors."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    rng = random.Random(seed)  # noqa: S311 - deterministic test data
    return [rng.uniform(-1, 1) for _ in range(dimensions)]


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    texts = body.get("input") or []
    texts = [texts] if isinstance(texts, str) else texts
    dims = int(body.get("dimensions") or 1536)
    # The SDK asks for base64 by default; answering floats (what it gets with encoding_format=float)
    # exercises its fallback, so honour the request.
    data = []
    for i, text in enumerate(texts):
        vector = fake_embedding(str(text), dims)
        if body.get("encoding_format") == "base64":
            encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        else:
            encoded = vector
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = sum(len(str(t).split()) for t in texts)
    return {"object": "list", "data": data, "model": body.get("model", "fake"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _reply(body: dict[str, Any], behaviour: Behaviour) -> str:
    return behaviour.text if behaviour.text is not None else default_reply(body)


def _pieces(text: str) -> list[str]:
    # Word-sized deltas, as a real model streams them; whitespace stays attached.
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)] if text else []


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chunk_obj(body: dict[str, Any], delta: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": choices,
        "usage": None,
    }


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": _usage(body, text),
    }
