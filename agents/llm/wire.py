"""What the OpenAI and Anthropic adapters share: error mapping around their SDKs (which name their
exceptions alike), retry-after headers, and assembling streamed tool calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from aios.agents.errors import (
    LLMError,
    MalformedResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from aios.agents.llm.base import ToolCall
from aios.schemas.jsonlimits import JsonTooDeepError, parse_json


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
