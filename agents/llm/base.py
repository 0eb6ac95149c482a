"""The provider-neutral request/response types and the ``Provider`` protocol every backend meets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

ROLES = frozenset({"system", "user", "assistant", "tool"})

OnDelta = Callable[[str], None]
"""Told each piece of the answer's text as it streams (live tokens); must not block."""


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, what it does, and its arguments as JSON Schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """The model asked to call ``name`` with ``arguments``; ``id`` pairs it with its result."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation; ``role`` is system, user, assistant or tool.

    An assistant turn may carry ``tool_calls``; a tool turn is the result of the call
    ``tool_call_id`` names.
    """

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        # Fail where the message is built, not deep inside a vendor SDK.
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, not {self.role!r}")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")


@dataclass(frozen=True)
class ChatRequest:
    """What to ask. ``metadata`` is for our own tracing (task id, attempt); it is not sent.

    ``response_schema`` asks for structured output: one JSON object meeting that JSON Schema.
    """

    messages: tuple[ChatMessage, ...]
    max_tokens: int = 1024
    temperature: float = 0.2
    metadata: Mapping[str, str] = field(default_factory=dict)
    response_schema: Mapping[str, Any] | None = None
    tools: tuple[ToolSpec, ...] = ()  # functions the model may call instead of answering

    def last_user_text(self) -> str:
        """The content of the last user message, or '' when there is none."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True)
class Usage:
    """Tokens billed for one call, as the provider reported them.

    ``input_tokens`` counts every prompt token, cached or not; ``cached_input_tokens`` is the part
    of them read from the provider's prompt cache, billed at the cheaper cached-input price.
    """

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0


@dataclass(frozen=True)
class ChatResponse:
    """One completed answer with what it cost and how long it took.

    ``ttft_ms`` is the time to the first content token (None when nothing streamed); ``offline``
    marks answers no LLM produced, so they are never mistaken for real results.
    """

    text: str
    provider: str
    model: str
    usage: Usage
    latency_ms: float
    ttft_ms: float | None
    offline: bool = False
    tool_calls: tuple[ToolCall, ...] = ()  # when set, the model wants these run before it answers


@runtime_checkable
class Provider(Protocol):
    """A chat model behind one vendor's API. Implementations map vendor errors to ``LLMError``."""

    name: str
    model: str
    offline: bool

    async def complete(self, request: ChatRequest, *, on_delta: OnDelta | None = None) -> ChatResponse:
        """Answer ``request``, telling ``on_delta`` each piece of text as it arrives; raise an
        ``agents.errors.LLMError`` subclass on failure."""
        ...

    async def aclose(self) -> None:
        """Release network resources; safe to call more than once."""
        ...


@dataclass(frozen=True)
class LlmConfig:
    """Typed LLM settings, read from the environment by ``streams`` and passed down.

    ``spec`` is ``'provider:model'`` (e.g. ``'openai:gpt-4o-mini'``, ``'offline:echo'``) or None to
    choose automatically from the keys that are set. ``local_base_url`` is an OpenAI-compatible
    server (Ollama, vLLM, llama.cpp) used by ``'local:<model>'``.
    """

    spec: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    local_base_url: str | None = None
    timeout_s: float = 60.0
    http_client: str = "auto"  # AIOS_LLM_HTTP_CLIENT: auto, aiohttp or httpx (see wire.http_client)
