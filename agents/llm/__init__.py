"""The LLM provider layer: one ``Provider`` interface, one factory, one module per backend.

Backends are imported lazily by :func:`make_provider`, so importing this package never pulls in
a vendor SDK.
"""

from agents.llm.base import ChatMessage, ChatRequest, ChatResponse, LlmConfig, Provider, Usage
from agents.llm.factory import describe_choice, make_provider

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "LlmConfig",
    "Provider",
    "Usage",
    "describe_choice",
    "make_provider",
]
