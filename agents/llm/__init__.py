"""The LLM provider layer: one ``Provider`` interface, one factory, one module per backend.

Backends are imported lazily by :func:`make_provider`, so importing this package never pulls in
a vendor SDK.
"""

from aios.agents.llm.base import ChatMessage, ChatRequest, ChatResponse, LlmConfig, Provider, Usage
from aios.agents.llm.catalogue import Catalogue, ModelInfo, cost_usd, load_catalogue
from aios.agents.llm.factory import describe_choice, make_provider

__all__ = [
    "Catalogue",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "LlmConfig",
    "ModelInfo",
    "Provider",
    "Usage",
    "cost_usd",
    "describe_choice",
    "load_catalogue",
    "make_provider",
]
