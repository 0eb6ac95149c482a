"""OpenAI (and OpenAI-compatible) chat models through the official ``openai`` SDK.

The SDK's own retries are off: the router retries (408/409/429/5xx, honouring retry-after). This
module streams the answer to measure time-to-first-token and maps the SDK's exceptions to
``agents.errors`` in one place, :func:`mapped_errors`.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, cast

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionToolParam

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

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
_OVERLOADED = 529


class OpenAIProvider:
    """A chat model on the OpenAI Chat Completions API (or any server speaking it)."""

    name = "openai"
    offline = False

    def __init__(self, model: str, *, config: LlmConfig, name: str = "openai") -> None:
        if not config.openai_api_key:
            raise missing_key_error()
        self.model = model
        self.name = name  # "local" when it talks to an OpenAI-compatible local server
        self.timeout_s = config.timeout_s
        # base_url is always explicit so the SDK never falls back to reading OPENAI_BASE_URL.
        self._client = openai.AsyncOpenAI(
            api_key=config.openai_api_key,
            base_url=config.openai_base_url or DEFAULT_BASE_URL,
            timeout=config.timeout_s,
            max_retries=0,  # the router decides every retry (agents/llm/router.py)
        )

    async def complete(self, request: ChatRequest, *, on_delta: OnDelta | None = None) -> ChatResponse:
        """Stream one chat completion, telling ``on_delta`` each text delta; raise an ``LLMError``
        subclass on failure. The whole call, stream included, takes at most the configured timeout
        (the SDK's own timeout is per read, so a server that trickles would never trip it)."""
        messages = [_message(m) for m in request.messages]
        extra: dict[str, Any] = {}
        if request.tools:
            extra["tools"] = [_tool(t) for t in request.tools]
        if request.response_schema is not None and not request.tools:
            # Non-strict: role contracts use JSON Schema features strict mode does not accept.
            extra["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": dict(request.response_schema), "strict": False}}
        started = time.perf_counter()
        ttft_ms: float | None = None
        parts: list[str] = []
        calls = wire.ToolCallParts(self.name)
        usage: Usage | None = None
        chunks = 0
        async with wire.deadline(self.timeout_s, self.name):
            with mapped_errors(self.name):
                stream = await self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    max_completion_tokens=request.max_tokens,
                    temperature=request.temperature,
                    stream=True,
                    stream_options={"include_usage": True},
                    **extra,
                )
                async with stream:
                    async for chunk in stream:
                        chunks += 1
                        text = _delta_text(chunk, self.name, calls)
                        if text:
                            if ttft_ms is None:
                                ttft_ms = (time.perf_counter() - started) * 1000
                            parts.append(text)
                            if on_delta is not None:
                                on_delta(text)
                        if chunk.usage is not None:
                            usage = _usage(chunk.usage)
        if chunks == 0:
            raise MalformedResponseError("the stream ended without a single chunk", provider=self.name)
        return ChatResponse(
            text="".join(parts),
            provider=self.name,
            model=self.model,
            # OpenAI-compatible servers may ignore include_usage; 0 means "not reported".
            usage=usage or Usage(0, 0),
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=ttft_ms,
            tool_calls=calls.finish(),
        )

    async def aclose(self) -> None:
        """Close the SDK's HTTP connection pool."""
        await self._client.close()


def missing_key_error() -> MissingCredentialsError:
    """The error for an OpenAI provider chosen without a key, naming the variables to set."""
    return MissingCredentialsError(
        provider="openai",
        env_var="AIOS_OPENAI_API_KEY (or OPENAI_API_KEY)",
        alternative="AIOS_LLM=offline:echo",
    )


def _usage(reported: CompletionUsage) -> Usage:
    details = reported.prompt_tokens_details
    cached = details.cached_tokens if details is not None else None
    # prompt_tokens already includes the cached tokens, as Usage.input_tokens does.
    return Usage(reported.prompt_tokens, reported.completion_tokens, cached_input_tokens=cached or 0)


def _message(m: ChatMessage) -> ChatCompletionMessageParam:
    if m.role == "tool":
        return cast(ChatCompletionMessageParam, {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
    if m.tool_calls:
        calls = [{"id": c.id, "type": "function",
                  "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments))}} for c in m.tool_calls]
        return cast(ChatCompletionMessageParam, {"role": "assistant", "content": m.content or None, "tool_calls": calls})
    return cast(ChatCompletionMessageParam, {"role": m.role, "content": m.content})


def _tool(t: ToolSpec) -> ChatCompletionToolParam:
    return {"type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}}


def _delta_text(chunk: ChatCompletionChunk, provider: str, calls: wire.ToolCallParts) -> str:
    # The SDK builds chunks without validation, so a server speaking a different format shows up
    # here as missing or mistyped fields rather than as an exception.
    choices: object = chunk.choices
    if not isinstance(choices, list):
        raise MalformedResponseError("a stream chunk has no 'choices' list", provider=provider)
    if not choices:
        return ""  # the final usage chunk carries no choices
    delta = getattr(choices[0], "delta", None)
    for call in getattr(delta, "tool_calls", None) or ():
        function = getattr(call, "function", None)
        calls.start(call.index, getattr(call, "id", None), getattr(function, "name", None))
        calls.add(call.index, getattr(function, "arguments", None))
    content: object = getattr(delta, "content", None)
    if content is None:
        return ""
    if not isinstance(content, str):
        raise MalformedResponseError("a stream chunk's delta.content is not text", provider=provider)
    return content


def mapped_errors(provider: str) -> contextlib.AbstractContextManager[None]:
    """Turn ``openai`` SDK exceptions into the most specific ``agents.errors`` class."""
    return wire.mapped_errors(openai, provider, _status_error)


def _status_error(exc: openai.APIStatusError, provider: str) -> LLMError:
    status = exc.status_code
    message = f"{status}: {exc.message}"
    if isinstance(exc, openai.RateLimitError):
        retry_after = wire.retry_after(exc.response.headers)
        return RateLimitError(message, provider=provider, status_code=status, retry_after=retry_after)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderAuthError(message, provider=provider, status_code=status)
    if isinstance(exc, openai.BadRequestError) and exc.code == "context_length_exceeded":
        return ContextTooLongError(message, provider=provider, status_code=status)
    if status == _OVERLOADED:
        return OverloadedError(message, provider=provider, status_code=status)
    if status == 408:
        return ProviderTimeoutError(message, provider=provider, status_code=status)
    if status >= 500 or status == 409:
        return ProviderUnavailableError(message, provider=provider, status_code=status)
    return BadRequestError(message, provider=provider, status_code=status)
