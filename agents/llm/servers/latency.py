"""A latency-simulating LLM server: OpenAI's Chat Completions and Anthropic's Messages wire formats
on one asyncio server (uvicorn, httptools), with a configurable time to first token, streaming
time, answer length, error rate and 429 rate. ``aios dev llm`` serves it; tests, ``aios bench
capacity`` and the demo use it.

The scripted fakes beside it (``openai.py``, ``anthropic.py``) are a thread per request, made for
per-test scripts; this one holds hundreds of streams at once on one core, and counts what it saw:
calls, the peak of calls in flight, and connections the client closed before the answer ended.
``GET /stats`` returns those counters as JSON; ``POST /stats/reset`` zeroes them.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
STATS_PATH = "/stats"
RESET_PATH = "/stats/reset"
MAX_RECORDED = 100_000  # calls kept in ``LatencyStats.calls`` (the counters go on past it)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class LatencyProfile:
    """How every call is answered."""

    ttft_s: float = 1.0  # from the request to the first token
    stream_s: float = 0.5  # from the first token to the last
    tokens: int = 20  # text deltas in an answer (one word each)
    error_rate: float = 0.0  # share of calls answered 500
    rate_limit_rate: float = 0.0  # share of calls answered 429
    retry_after_s: float = 1.0  # the retry-after of a 429
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.ttft_s < 0 or self.stream_s < 0 or self.tokens < 1:
            raise ValueError("ttft_s and stream_s must be ≥ 0 and tokens ≥ 1")
        if not (0 <= self.error_rate <= 1 and 0 <= self.rate_limit_rate <= 1
                and self.error_rate + self.rate_limit_rate <= 1):
            raise ValueError("error_rate and rate_limit_rate are shares between 0 and 1 (together at most 1)")


@dataclass
class CallRecord:
    """One call the server received."""

    path: str
    started_at: float  # time.monotonic()
    ended_at: float | None = None
    status: int = 200
    closed_early: bool = False  # the client closed the connection before the answer ended
    model: str = ""


@dataclass
class LatencyStats:
    calls: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    completed: int = 0
    closed_early: int = 0
    rate_limited: int = 0
    errors: int = 0
    records: list[CallRecord] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "records"}


class LatencyApp:
    """The ASGI application (no framework: per-call overhead is what this server is measured on)."""

    def __init__(self, profile: LatencyProfile) -> None:
        self.profile = profile
        self.stats = LatencyStats()
        self._rng = random.Random(profile.seed)  # noqa: S311 - simulated failures, not security

    def reset(self) -> None:
        self.stats = LatencyStats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == STATS_PATH:
            await _json(send, 200, self.stats.summary())
            return
        if method == "POST" and path == RESET_PATH:
            self.reset()
            await _json(send, 200, {"reset": True})
            return
        if method != "POST" or path not in (OPENAI_PATH, ANTHROPIC_PATH):
            await _json(send, 404, {"error": {"type": "not_found", "message": f"no route {method} {path}"}})
            return
        body = await _body(receive)
        await self._call(path, body, receive, send)

    async def _call(self, path: str, body: dict[str, Any], receive: Receive, send: Send) -> None:
        stats, profile = self.stats, self.profile
        record = CallRecord(path, time.monotonic(), model=str(body.get("model", "")))
        if len(stats.records) < MAX_RECORDED:
            stats.records.append(record)
        stats.calls += 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        disconnected = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, disconnected))
        try:
            draw = self._rng.random()
            if draw < profile.rate_limit_rate:
                record.status = 429
                stats.rate_limited += 1
                await _error(send, path, 429, "rate_limit_error", "simulated rate limit",
                             [(b"retry-after", f"{profile.retry_after_s:g}".encode())])
            elif draw < profile.rate_limit_rate + profile.error_rate:
                record.status = 500
                stats.errors += 1
                await _error(send, path, 500, "api_error", "simulated server error", [])
            else:
                words = [f"w{i}" for i in range(profile.tokens)]
                stream = bool(body.get("stream"))
                if stream and path == OPENAI_PATH:
                    finished = await self._openai_stream(body, words, send, disconnected)
                elif stream:
                    finished = await self._anthropic_stream(body, words, send, disconnected)
                else:
                    finished = not await _pause(disconnected, profile.ttft_s + profile.stream_s)
                    if finished:
                        await _json(send, 200, _openai_completion(body, words) if path == OPENAI_PATH
                                    else _anthropic_message(body, words))
                if finished:
                    stats.completed += 1
                else:
                    record.closed_early = True
                    stats.closed_early += 1
        finally:
            watcher.cancel()
            record.ended_at = time.monotonic()
            stats.in_flight -= 1

    async def _openai_stream(self, body: dict[str, Any], words: list[str], send: Send,
                             disconnected: asyncio.Event) -> bool:
        await _start_stream(send)
        if await _pause(disconnected, self.profile.ttft_s):
            return False
        model = body.get("model", "latency")
        gap = self.profile.stream_s / max(len(words) - 1, 1)
        for i, word in enumerate(words):
            if i and gap:
                await asyncio.sleep(gap)
            if disconnected.is_set():
                return False
            piece = word if i == len(words) - 1 else word + " "
            await _event(send, _openai_chunk(model, {"content": piece}, None))
        await _event(send, _openai_chunk(model, {}, "stop"))
        usage = _openai_chunk(model, None, None)
        usage["usage"] = _usage(body, words)
        await _event(send, usage)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        return True

    async def _anthropic_stream(self, body: dict[str, Any], words: list[str], send: Send,
                                disconnected: asyncio.Event) -> bool:
        await _start_stream(send)
        model = body.get("model", "latency")
        prompt = _usage(body, words)["prompt_tokens"]
        await _sse(send, "message_start", {"type": "message_start", "message": {
            "id": "msg_latency", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 0}}})
        if await _pause(disconnected, self.profile.ttft_s):
            return False
        await _sse(send, "content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": {"type": "text", "text": ""}})
        gap = self.profile.stream_s / max(len(words) - 1, 1)
        for i, word in enumerate(words):
            if i and gap:
                await asyncio.sleep(gap)
            if disconnected.is_set():
                return False
            piece = word if i == len(words) - 1 else word + " "
            await _sse(send, "content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": piece}})
        await _sse(send, "content_block_stop", {"type": "content_block_stop", "index": 0})
        await _sse(send, "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                   "stop_sequence": None}, "usage": {"output_tokens": len(words)}})
        await _sse(send, "message_stop", {"type": "message_stop"}, more=False)
        return True


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive: Receive) -> dict[str, Any]:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return


async def _pause(disconnected: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as the client disconnects."""
    if disconnected.is_set():
        return True
    try:
        await asyncio.wait_for(disconnected.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _json(send: Send, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def _error(send: Send, path: str, status: int, kind: str, message: str,
                 headers: list[tuple[bytes, bytes]]) -> None:
    if path == ANTHROPIC_PATH:
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    await _json(send, status, body, headers)


async def _start_stream(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})


async def _event(send: Send, obj: dict[str, Any]) -> None:
    await send({"type": "http.response.body", "body": b"data: " + json.dumps(obj).encode() + b"\n\n",
                "more_body": True})


async def _sse(send: Send, name: str, obj: dict[str, Any], more: bool = True) -> None:
    data = f"event: {name}\ndata: ".encode() + json.dumps(obj).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": data, "more_body": more})


def _usage(body: dict[str, Any], words: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []) if isinstance(m, dict))
    return {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}


def _openai_chunk(model: str, delta: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-latency", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": choices, "usage": None}


def _openai_completion(body: dict[str, Any], words: list[str]) -> dict[str, Any]:
    return {"id": "chatcmpl-latency", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                         "finish_reason": "stop"}], "usage": _usage(body, words)}


def _anthropic_message(body: dict[str, Any], words: list[str]) -> dict[str, Any]:
    usage = _usage(body, words)
    return {"id": "msg_latency", "type": "message", "role": "assistant", "model": body.get("model", ""),
            "content": [{"type": "text", "text": " ".join(words)}], "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}}


class LatencyServer:
    """The server on loopback: ``start()`` serves in a thread of its own (tests), ``serve()`` in
    the caller's event loop (``aios dev llm``)."""

    def __init__(self, profile: LatencyProfile | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = LatencyApp(profile or LatencyProfile())
        self.host, self.port = host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def profile(self) -> LatencyProfile:
        return self.app.profile

    def set_profile(self, **changes: Any) -> None:
        """Answer the next calls differently (e.g. ``ttft_s=30`` for a provider that hangs)."""
        self.app.profile = replace(self.app.profile, **changes)

    @property
    def stats(self) -> LatencyStats:
        return self.app.stats

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _config(self) -> Any:
        import uvicorn

        return uvicorn.Config(self.app, host=self.host, port=self.port, http="httptools", loop="asyncio",
                              lifespan="on", log_level="warning", access_log=False, backlog=4096,
                              timeout_keep_alive=30)

    async def serve(self, on_ready: Callable[[LatencyServer], None] | None = None) -> None:
        """Serve until ``stop()`` (or a signal, in the main thread)."""
        import uvicorn

        self._server = uvicorn.Server(self._config())
        ready = asyncio.ensure_future(self._when_started(on_ready))
        try:
            await self._server.serve()
        finally:
            ready.cancel()

    async def _when_started(self, on_ready: Callable[[LatencyServer], None] | None) -> None:
        while not self._server.started:
            await asyncio.sleep(0.01)
        sockets = self._server.servers[0].sockets if self._server.servers else []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        if on_ready is not None:
            on_ready(self)

    def start(self, timeout_s: float = 10.0) -> LatencyServer:
        started = threading.Event()

        def run() -> None:
            asyncio.run(self.serve(lambda _: started.set()))

        self._thread = threading.Thread(target=run, name="aios-latency-llm", daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):
            raise RuntimeError(f"the latency LLM server did not start within {timeout_s:.0f}s")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> LatencyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
