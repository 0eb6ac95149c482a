"""What the OpenAI and Anthropic adapters share: error mapping around their SDKs (which name their
exceptions alike), their HTTP client, retry-after headers, and assembling streamed tool calls."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import httpx

from aios.agents.errors import (
    LLMError,
    MalformedResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from aios.agents.llm.base import ToolCall
from aios.schemas.jsonlimits import JsonTooDeepError, parse_json

# The proxy variables httpx reads; the SDKs' aiohttp transport does not, so "auto" keeps httpx
# where one is set.
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


def http_client(sdk: ModuleType, kind: str, timeout_s: float) -> dict[str, Any]:
    """The SDK client's ``http_client`` argument for AIOS_LLM_HTTP_CLIENT ``kind``: ``httpx`` is the
    SDK's default; ``aiohttp`` is its aiohttp transport (the SDK's ``DefaultAioHttpClient``), whose
    C parser spent about a fifth less of an agent's CPU per streamed call (aios bench capacity);
    ``auto`` is aiohttp unless a proxy variable is set."""
    if kind == "httpx" or (kind == "auto" and any(os.environ.get(v) for v in PROXY_VARIABLES)):
        return {}
    return {"http_client": sdk.DefaultAioHttpClient(timeout=timeout_s, verify=shared_tls())}


@functools.cache
def shared_tls() -> ssl.SSLContext:
    """One TLS context for every SDK client of the process. Left to itself, the aiohttp transport
    builds one per client, loading the whole CA bundle each time (up to 0.2 s of CPU here): a
    property test building providers took 33 s, 5.8 s with this. httpx builds it as the SDKs would
    (the system store, or SSL_CERT_FILE / SSL_CERT_DIR when set); a context is safe to share."""
    return httpx.create_ssl_context()


@contextmanager
def mapped_errors(sdk: ModuleType, provider: str, status_error: Callable[[Any, str], LLMError]) -> Iterator[None]:
    """Turn the exceptions of ``sdk`` (``openai`` or ``anthropic``) into ``agents.errors`` classes;
    ``status_error`` decides for HTTP statuses, whose meaning differs between vendors."""
    try:
        yield
    except json.JSONDecodeError as exc:
        raise MalformedResponseError(f"undecodable stream data: {exc}", provider=provider) from exc
    except sdk.APIStatusError as exc:
        raise status_error(exc, provider) from exc
    except sdk.APIResponseValidationError as exc:
        raise MalformedResponseError(exc.message, provider=provider, status_code=exc.status_code) from exc
    except sdk.APITimeoutError as exc:
        refused = _unreachable(exc)
        if refused is not None:
            raise ProviderUnavailableError(f"cannot reach the provider: {refused}", provider=provider) from exc
        raise ProviderTimeoutError(f"no answer in time: {exc.message}", provider=provider) from exc
    except sdk.APIConnectionError as exc:
        raise ProviderUnavailableError(f"cannot reach the provider: {exc.message}", provider=provider) from exc
    except sdk.APIError as exc:
        # An error event inside an otherwise healthy stream: the provider failed mid-answer.
        raise ProviderUnavailableError(f"error during streaming: {exc.message}", provider=provider) from exc


@asynccontextmanager
async def deadline(timeout_s: float, provider: str) -> AsyncIterator[None]:
    """The whole call, streaming included, within ``timeout_s``: the SDKs' timeouts apply per read,
    so a server that sends a byte now and then would hold a call (and a worker's slot) for ever."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as exc:
        raise ProviderTimeoutError(f"no complete answer within {timeout_s:g}s", provider=provider) from exc


def _unreachable(exc: BaseException) -> OSError | None:
    """The OS error under a "time-out" that was a refused or failed connection: the SDKs' aiohttp
    transport reports every connection error as a connect time-out."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def retry_after(headers: Any) -> float | None:
    """The provider's retry hint in seconds, from ``retry-after-ms`` or ``retry-after``."""
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return float(value) / divisor
        except ValueError:
            continue  # an HTTP-date: rare for LLM APIs, and the SDK already honoured it
    return None


@dataclass
class _Partial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class ToolCallParts:
    """Tool calls as they stream in: id and name first, the JSON arguments in fragments."""

    provider: str
    _calls: dict[int, _Partial] = field(default_factory=dict)

    def start(self, index: int, call_id: str | None, name: str | None) -> None:
        part = self._calls.setdefault(index, _Partial())
        part.id = call_id or part.id
        part.name = name or part.name

    def add(self, index: int, fragment: str | None) -> None:
        if fragment:
            self._calls.setdefault(index, _Partial()).arguments.append(fragment)

    def finish(self) -> tuple[ToolCall, ...]:
        calls = []
        for index in sorted(self._calls):
            part = self._calls[index]
            if not part.id or not part.name:
                raise MalformedResponseError(f"tool call {index} has no id or name", provider=self.provider)
            text = "".join(part.arguments) or "{}"
            try:
                arguments = parse_json(text)
            except json.JSONDecodeError as exc:
                raise MalformedResponseError(
                    f"tool call {part.name!r} has arguments that are not JSON: {exc.msg}", provider=self.provider
                ) from exc
            except JsonTooDeepError as exc:
                raise MalformedResponseError(f"tool call {part.name!r} has arguments {exc}",
                                             provider=self.provider) from exc
            if not isinstance(arguments, dict):
                raise MalformedResponseError(f"tool call {part.name!r} arguments are not an object",
                                             provider=self.provider)
            calls.append(ToolCall(part.id, part.name, arguments))
        return tuple(calls)
