"""OpenAI (and OpenAI-compatible) chat models through the official ``openai`` SDK.

The SDK's own retries are off: the router retries (408/409/429/5xx, honouring retry-after). This
module streams the answer to measure time-to-first-token and maps the SDK's exceptions to
``agents.errors`` in one place, :func:`mapped_errors`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

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
CLIENT_POOLS = 8  # connection pools per provider (see __init__)
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
        # Calls take turns over a few clients: httpcore's pool scans all of its connections on
        # every request and response, which with hundreds of calls in flight on one pool cost
        # more CPU per call than the call's own HTTP.
        self._clients = [openai.AsyncOpenAI(
            api_key=config.openai_api_key,
            base_url=config.openai_base_url or DEFAULT_BASE_URL,
            timeout=config.timeout_s,
            max_retries=0,  # the router decides every retry (agents/llm/router.py)
            **wire.http_client(openai, config.http_client, config.timeout_s),
        ) for _ in range(CLIENT_POOLS)]
        self._turn = itertools.cycle(self._clients)

    async def complete(self, request: ChatRequest, *, on_delta: OnDelta | None = None) -> ChatResponse:
        """Stream one chat completion, telling ``on_delta`` each text delta; raise an ``LLMError``
        subclass on failure. The whole call, stream included, takes at most the configured timeout
        (the SDK's own timeout is per read, so a server that trickles would never trip it)."""
        # The messages, tools and answer format go as the SDK's extra_body, which it sends as given:
        # as typed parameters, the SDK walks every message and schema against its TypedDicts on each
        # call, a fifth of an agent's CPU with hundreds of calls in flight (py-spy, aios bench
        # capacity). What goes on the wire is the same JSON.
        body: dict[str, Any] = {"messages": [_message(m) for m in request.messages]}
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        if request.response_schema is not None and not request.tools:
            # Non-strict: role contracts use JSON Schema features strict mode does not accept.
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": dict(request.response_schema), "strict": False}}
        started = time.perf_counter()
        ttft_ms: float | None = None
        parts: list[str] = []
        calls = wire.ToolCallParts(self.name)
        usage: Usage | None = None
        chunks = 0
        async with wire.deadline(self.timeout_s, self.name):
            with mapped_errors(self.name):
                # The raw SSE lines, decoded here: the SDK's typed chunks cost a pydantic model per
                # delta, which was a third of an agent's CPU per call with hundreds in flight.
                async with next(self._turn).chat.completions.with_streaming_response.create(
                    model=self.model,
                    messages=[],  # sent in extra_body (above)
                    max_completion_tokens=request.max_tokens,
                    temperature=request.temperature,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body=body,
                ) as response:
                    async for line in response.iter_lines():
                        chunk = _sse_data(line, self.name)
                        if chunk is None:
                            continue
                        chunks += 1
                        text = _delta_text(chunk, self.name, calls)
                        if text:
                            if ttft_ms is None:
                                ttft_ms = (time.perf_counter() - started) * 1000
                            parts.append(text)
                            if on_delta is not None:
                                on_delta(text)
                        reported = chunk.get("usage")
                        if reported is not None:
                            usage = _usage(reported, self.name)
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
        for client in self._clients:
            await client.close()


def missing_key_error() -> MissingCredentialsError:
    """The error for an OpenAI provider chosen without a key, naming the variables to set."""
    return MissingCredentialsError(
        provider="openai",
        env_var="AIOS_OPENAI_API_KEY (or OPENAI_API_KEY)",
        alternative="AIOS_LLM=offline:echo",
    )


def _sse_data(line: str, provider: str) -> dict[str, Any] | None:
    """The JSON object of one SSE ``data:`` line; None for other lines and the closing [DONE]."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    chunk = json.loads(data)  # undecodable: mapped_errors makes it a MalformedResponseError
    if not isinstance(chunk, dict):
        raise MalformedResponseError("a stream chunk is not a JSON object", provider=provider)
    error = chunk.get("error")
    if error is not None:
        # An error event inside an otherwise healthy stream: the provider failed mid-answer.
        detail = error.get("message") if isinstance(error, dict) else error
        raise ProviderUnavailableError(f"error during streaming: {detail}", provider=provider)
    return chunk


def _usage(reported: object, provider: str) -> Usage:
    if not isinstance(reported, dict):
        raise MalformedResponseError("a stream chunk's usage is not an object", provider=provider)
    details = reported.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        raise MalformedResponseError("a stream chunk's usage has no token counts", provider=provider)
    # prompt_tokens already includes the cached tokens, as Usage.input_tokens does.
    return Usage(prompt, completion, cached_input_tokens=cached if isinstance(cached, int) else 0)


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


def _delta_text(chunk: dict[str, Any], provider: str, calls: wire.ToolCallParts) -> str:
    # Servers that speak a slightly different format show up here as missing or mistyped fields.
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise MalformedResponseError("a stream chunk has no 'choices' list", provider=provider)
    if not choices:
        return ""  # the final usage chunk carries no choices
    first = choices[0]
    delta = first.get("delta") if isinstance(first, dict) else None
    if not isinstance(delta, dict):
        return ""
    for call in delta.get("tool_calls") or ():
        if not isinstance(call, dict) or not isinstance(call.get("index"), int):
            raise MalformedResponseError("a streamed tool call has no index", provider=provider)
        raw = call.get("function")
        function: dict[str, Any] = raw if isinstance(raw, dict) else {}
        calls.start(call["index"], call.get("id"), function.get("name"))
        calls.add(call["index"], function.get("arguments"))
    content = delta.get("content")
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
