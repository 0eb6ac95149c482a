"""Anthropic chat models through the official ``anthropic`` SDK and its streaming Messages API.

The SDK's own retries are off: the router retries (408/409/429/5xx/529, honouring retry-after). This
module streams the answer to measure time-to-first-token, reads usage from the message_start and
message_delta events, and maps the SDK's exceptions to ``agents.errors`` in :func:`mapped_errors`.
``ChatRequest.temperature`` is not sent: the SDK's Messages API no longer takes sampling parameters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import MessageParam, RawMessageStreamEvent, ToolParam

from aios.agents.errors import (
    BadRequestError,
    ContextTooLongError,
    LLMError,
    MalformedResponseError,
    MissingCredentialsError,
    OverloadedError,
    ProviderAuthError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from aios.agents.llm import wire
from aios.agents.llm.base import ChatMessage, ChatRequest, ChatResponse, LlmConfig, OnDelta, ToolSpec, Usage

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-haiku-4-5"
_OVERLOADED = 529


class AnthropicProvider:
    """A chat model on the Anthropic Messages API."""

    name = "anthropic"
    offline = False

    def __init__(self, model: str, *, config: LlmConfig) -> None:
        if not config.anthropic_api_key:
            raise missing_key_error()
        self.model = model
        self.timeout_s = config.timeout_s
        # Key and base_url are always explicit so the SDK never falls back to ANTHROPIC_* variables.
        self._client = anthropic.AsyncAnthropic(
            api_key=config.anthropic_api_key,
            base_url=config.anthropic_base_url or DEFAULT_BASE_URL,
            timeout=config.timeout_s,
            max_retries=0,  # the router decides every retry (agents/llm/router.py)
            **wire.http_client(anthropic, config.http_client, config.timeout_s),
        )

    async def complete(self, request: ChatRequest, *, on_delta: OnDelta | None = None) -> ChatResponse:
        """Stream one message, telling ``on_delta`` each text delta; raise an ``LLMError`` subclass
        on failure. The whole call takes at most the configured timeout (see ``wire.deadline``)."""
        # The Messages API takes the system prompt as a parameter, not as a turn.
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages = _messages(request.messages)
        extra: dict[str, Any] = {}
        if request.tools:
            extra["tools"] = [_tool(t) for t in request.tools]
        started = time.perf_counter()
        ttft_ms: float | None = None
        parts: list[str] = []
        tally = _UsageTally(self.name)
        stopped = False
        async with wire.deadline(self.timeout_s, self.name):
            with mapped_errors(self.name):
                stream = await self._client.messages.create(
                    model=self.model,
                    messages=messages,
                    max_tokens=request.max_tokens,
                    stream=True,
                    system=system or anthropic.omit,
                    **extra,
                )
                async with stream:
                    async for event in stream:
                        text = tally.read(event, self.name)
                        if text:
                            if ttft_ms is None:
                                ttft_ms = (time.perf_counter() - started) * 1000
                            parts.append(text)
                            if on_delta is not None:
                                on_delta(text)
                        stopped = stopped or event.type == "message_stop"
        if not tally.started:
            raise MalformedResponseError("the stream did not open with message_start", provider=self.name)
        if not stopped:
            raise MalformedResponseError("the stream ended before message_stop", provider=self.name)
        return ChatResponse(
            text="".join(parts),
            provider=self.name,
            model=self.model,
            usage=tally.usage(),
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=ttft_ms,
            tool_calls=tally.calls.finish(),
        )

    async def aclose(self) -> None:
        """Close the SDK's HTTP connection pool."""
        await self._client.close()


def missing_key_error() -> MissingCredentialsError:
    """The error for an Anthropic provider chosen without a key, naming the variables to set."""
    return MissingCredentialsError(
        provider="anthropic",
        env_var="AIOS_ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY)",
        alternative="AIOS_LLM=offline:echo",
    )


def _messages(messages: tuple[ChatMessage, ...]) -> list[MessageParam]:
    # Tool results go back as tool_result blocks of a user turn; consecutive ones share that turn.
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)}
                       for c in m.tool_calls]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return cast(list[MessageParam], out)


def _tool(t: ToolSpec) -> ToolParam:
    return cast(ToolParam, {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)})


@dataclass
class _UsageTally:
    """Usage as the stream reports it: input counts in message_start, output totals in message_delta;
    tool_use blocks, their JSON input in input_json_delta fragments."""

    provider: str
    started: bool = False
    input_tokens: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    output_tokens: int = 0
    calls: wire.ToolCallParts = field(init=False)

    def __post_init__(self) -> None:
        self.calls = wire.ToolCallParts(self.provider)

    def read(self, event: RawMessageStreamEvent, provider: str) -> str:
        """Account for ``event``; return the text it carries ('' for all but text deltas)."""
        # The SDK builds events without validation, so a server speaking another format shows up
        # as missing or mistyped fields rather than as an exception.
        if event.type == "message_start":
            self.started = True
            usage: object = getattr(event.message, "usage", None)
            self._take(usage, provider, "message_start")
        elif event.type == "message_delta":
            self._take(getattr(event, "usage", None), provider, "message_delta")
        elif event.type == "content_block_start" and getattr(event.content_block, "type", None) == "tool_use":
            block = event.content_block
            self.calls.start(event.index, getattr(block, "id", None), getattr(block, "name", None))
        elif event.type == "content_block_delta" and getattr(event.delta, "type", None) == "input_json_delta":
            self.calls.add(event.index, getattr(event.delta, "partial_json", None))
        elif event.type == "content_block_delta" and getattr(event.delta, "type", None) == "text_delta":
            text: object = getattr(event.delta, "text", None)
            if not isinstance(text, str):
                raise MalformedResponseError("a text_delta carries no text", provider=provider)
            return text
        return ""

    def _take(self, usage: object, provider: str, where: str) -> None:
        if usage is None:
            raise MalformedResponseError(f"{where} carries no usage", provider=provider)
        # message_delta's counts are cumulative totals, so the latest non-null value wins.
        for attr, field_name in (
            ("input_tokens", "input_tokens"),
            ("cache_read_input_tokens", "cache_read"),
            ("cache_creation_input_tokens", "cache_creation"),
            ("output_tokens", "output_tokens"),
        ):
            value: object = getattr(usage, attr, None)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise MalformedResponseError(f"{where} usage.{attr} is not an integer", provider=provider)
            setattr(self, field_name, value)

    def usage(self) -> Usage:
        # Anthropic's input_tokens excludes cache reads and writes; Usage counts every prompt
        # token. Cache writes are billed at 1.25x input but are counted here as plain input.
        total_input = self.input_tokens + self.cache_read + self.cache_creation
        return Usage(total_input, self.output_tokens, cached_input_tokens=self.cache_read)


@contextmanager
def mapped_errors(provider: str) -> Iterator[None]:
    """Turn ``anthropic`` SDK exceptions into the most specific ``agents.errors`` class."""
    try:
        with wire.mapped_errors(anthropic, provider, _status_error):
            yield
    # The SDK wraps transport errors only while sending; once the stream is open, a read timeout
    # or a dropped connection surfaces from its HTTP library (httpx2) as is.
    except httpx2.TimeoutException as exc:
        raise ProviderTimeoutError(f"no answer in time: {exc!r}", provider=provider) from exc
    except httpx2.TransportError as exc:
        raise ProviderUnavailableError(f"the stream broke off: {exc!r}", provider=provider) from exc


def _status_error(exc: anthropic.APIStatusError, provider: str) -> LLMError:
    # An `error` event inside a 200 stream arrives as an APIStatusError with status 200: its body's
    # error type then says what failed, and there is no HTTP status worth reporting.
    status: int | None = exc.status_code if exc.status_code >= 400 else None
    kind, detail = _error_fields(exc.body)
    message = f"{status or 'stream error'}: {kind or 'error'}: {detail or exc.message}"
    if status == 429 or kind == "rate_limit_error":
        return RateLimitError(message, provider=provider, status_code=status, retry_after=wire.retry_after(exc.response.headers))
    if status == _OVERLOADED or kind == "overloaded_error":
        return OverloadedError(message, provider=provider, status_code=status)
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return ProviderAuthError(message, provider=provider, status_code=status)
    if status == 400 and _is_prompt_too_long(kind, detail):
        return ContextTooLongError(message, provider=provider, status_code=status)
    if status == 408 or kind == "timeout_error":
        return ProviderTimeoutError(message, provider=provider, status_code=status)
    if status is None or status >= 500 or status == 409 or kind == "api_error":
        return ProviderUnavailableError(message, provider=provider, status_code=status)
    return BadRequestError(message, provider=provider, status_code=status)


def _is_prompt_too_long(kind: str | None, detail: str | None) -> bool:
    # The API reports an oversized prompt as a plain invalid_request_error with no error code
    # (none of the SDK's ErrorDetails names it), so its message is the only thing that tells it
    # apart. The match is confined to this one function and to that error type.
    return kind == "invalid_request_error" and (detail or "").lower().startswith("prompt is too long")


def _error_fields(body: object) -> tuple[str | None, str | None]:
    """``error.type`` and ``error.message`` of an Anthropic error body, where present."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    kind, detail = error.get("type"), error.get("message")
    return (kind if isinstance(kind, str) else None), (detail if isinstance(detail, str) else None)
