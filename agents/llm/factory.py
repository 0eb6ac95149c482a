"""Choose a provider from a ``'provider:model'`` spec: one registry, backends imported lazily."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agents.llm.base import LlmConfig, Provider
from schemas.errors import ConfigError

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_OFFLINE_MODEL = "echo"
SPEC_FORMAT = "'provider:model', e.g. 'openai:gpt-4o-mini' or 'offline:echo'"


def _openai(model: str, config: LlmConfig) -> Provider:
    # Imported here so choosing the offline provider never imports the openai SDK.
    from agents.llm.openai_provider import OpenAIProvider, missing_key_error

    if not config.openai_api_key:
        raise missing_key_error()
    return OpenAIProvider(model, config=config)


def _offline(model: str, config: LlmConfig) -> Provider:
    from agents.llm.offline import OfflineProvider

    return OfflineProvider(model)


PROVIDERS: dict[str, Callable[[str, LlmConfig], Provider]] = {
    "openai": _openai,
    "offline": _offline,
}


@dataclass(frozen=True)
class Choice:
    """A resolved provider choice and why it was made (for logs and the CLI)."""

    provider: str
    model: str
    reason: str


def resolve(config: LlmConfig) -> Choice:
    """Decide provider and model from ``config`` without constructing anything."""
    if config.spec is None:
        if config.openai_api_key:
            return Choice("openai", DEFAULT_OPENAI_MODEL, "no AIOS_LLM set; an OpenAI key is set")
        return Choice("offline", DEFAULT_OFFLINE_MODEL, "no AIOS_LLM and no OpenAI key set")
    provider, sep, model = config.spec.strip().partition(":")
    provider, model = provider.strip().lower(), model.strip()
    if not sep or not provider or not model:
        raise ConfigError(f"AIOS_LLM={config.spec!r} is malformed: use {SPEC_FORMAT}")
    if provider not in PROVIDERS:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"AIOS_LLM={config.spec!r} names an unknown provider {provider!r}; known: {known}")
    return Choice(provider, model, "from AIOS_LLM")


def make_provider(config: LlmConfig) -> Provider:
    """Build the provider ``config`` selects; raise ``ConfigError`` saying what to fix."""
    choice = resolve(config)
    return PROVIDERS[choice.provider](choice.model, config)


def describe_choice(config: LlmConfig) -> str:
    """One human line saying which LLM will answer and why."""
    choice = resolve(config)
    if choice.provider == "offline":
        return f"LLM: offline provider ({choice.reason}) — results are labelled offline"
    return f"LLM: {choice.provider}:{choice.model} ({choice.reason})"
