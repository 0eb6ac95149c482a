"""OpenAI (and OpenAI-compatible) chat models through the official ``openai`` SDK.

The SDK owns retries (408/409/429/5xx, honouring retry-after, up to ``max_retries``); this
module streams the answer to measure time-to-first-token and maps the SDK's exceptions to
``agents.errors`` in one place, :func:`mapped_errors`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from agents.errors import (
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
from agents.llm.base import ChatRequest, ChatResponse, LlmConfig, Usage

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
        # base_url is always explicit so the SDK never falls back to reading OPENAI_BASE_URL.
        self._client = openai.AsyncOpenAI(
            api_key=config.openai_api_key,
            base_url=config.openai_base_url or DEFAULT_BASE_URL,
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Stream one chat completion; raise an ``LLMError`` subclass on failure."""
        messages = [
            cast(ChatCompletionMessageParam, {"role": m.role, "content": m.content}) for m in request.messages
        ]
        started = time.perf_counter()
        ttft_ms: float | None = None
        parts: list[str] = []
        usage: Usage | None = None
        chunks = 0
        with mapped_errors(self.name):
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_completion_tokens=request.max_tokens,
                temperature=request.temperature,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                async for chunk in stream:
                    chunks += 1
                    text = _delta_text(chunk, self.name)
                    if text:
                        if ttft_ms is None:
                            ttft_ms = (time.perf_counter() - started) * 1000
                        parts.append(text)
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


def _delta_text(chunk: ChatCompletionChunk, provider: str) -> str:
    # The SDK builds chunks without validation, so a server speaking a different format shows up
    # here as missing or mistyped fields rather than as an exception.
    choices: object = chunk.choices
    if not isinstance(choices, list):
        raise MalformedResponseError("a stream chunk has no 'choices' list", provider=provider)
    if not choices:
        return ""  # the final usage chunk carries no choices
    content: object = getattr(getattr(choices[0], "delta", None), "content", None)
    if content is None:
        return ""
    if not isinstance(content, str):
        raise MalformedResponseError("a stream chunk's delta.content is not text", provider=provider)
    return content


@contextmanager
def mapped_errors(provider: str) -> Iterator[None]:
    """Turn ``openai`` SDK exceptions into the most specific ``agents.errors`` class."""
    try:
        yield
    except json.JSONDecodeError as exc:
        raise MalformedResponseError(f"undecodable stream data: {exc}", provider=provider) from exc
    except openai.APIStatusError as exc:
        raise _status_error(exc, provider) from exc
    except openai.APIResponseValidationError as exc:
        raise MalformedResponseError(exc.message, provider=provider, status_code=exc.status_code) from exc
    except openai.APITimeoutError as exc:
        raise ProviderTimeoutError(f"no answer in time: {exc.message}", provider=provider) from exc
    except openai.APIConnectionError as exc:
        raise ProviderUnavailableError(
            f"cannot reach the provider: {exc.message}", provider=provider
        ) from exc
    except openai.APIError as exc:
        # An error event inside an otherwise healthy stream: the provider failed mid-answer.
        raise ProviderUnavailableError(f"error during streaming: {exc.message}", provider=provider) from exc


def _status_error(exc: openai.APIStatusError, provider: str) -> LLMError:
    status = exc.status_code
    message = f"{status}: {exc.message}"
    if isinstance(exc, openai.RateLimitError):
        retry_after = _retry_after(exc)
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


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return float(value) / divisor
        except ValueError:
            continue  # an HTTP-date: rare for LLM APIs, and the SDK already honoured it
    return None
