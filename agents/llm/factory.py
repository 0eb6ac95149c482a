"""Choose a provider from a ``'provider:model'`` spec: one registry, backends imported lazily."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from aios.agents.llm.base import LlmConfig, Provider
from aios.agents.llm.catalogue import load_catalogue
from aios.agents.llm.router import Deployment
from aios.schemas.errors import ConfigError

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5"
DEFAULT_OFFLINE_MODEL = "echo"
SPEC_FORMAT = "'provider:model', e.g. 'openai:gpt-4o-mini', 'anthropic:claude-haiku-4-5' or 'offline:echo'"
# Local OpenAI-compatible servers ignore the key, but the SDK insists on one.
LOCAL_API_KEY = "local-no-key"


def _openai(model: str, config: LlmConfig) -> Provider:
    # Imported here so choosing the offline provider never imports the openai SDK.
    from aios.agents.llm.openai_provider import OpenAIProvider, missing_key_error

    if not config.openai_api_key:
        raise missing_key_error()
    return OpenAIProvider(model, config=config)


def _anthropic(model: str, config: LlmConfig) -> Provider:
    try:
        from aios.agents.llm.anthropic_provider import AnthropicProvider
    except ModuleNotFoundError as exc:  # the SDK is an optional extra
        raise ConfigError(
            "the anthropic provider needs the 'anthropic' extra: pip install 'aios[anthropic]'"
        ) from exc
    return AnthropicProvider(model, config=config)  # raises MissingCredentialsError without a key


def _local(model: str, config: LlmConfig) -> Provider:
    if not config.local_base_url:
        raise ConfigError(
            f"local:{model} needs an OpenAI-compatible server: set AIOS_LOCAL_LLM_BASE_URL "
            "(e.g. http://localhost:11434/v1 for Ollama), or choose AIOS_LLM=offline:echo"
        )
    from aios.agents.llm.openai_provider import OpenAIProvider

    local = replace(config, openai_api_key=LOCAL_API_KEY, openai_base_url=config.local_base_url)
    return OpenAIProvider(model, config=local, name="local")


def _offline(model: str, config: LlmConfig) -> Provider:
    from aios.agents.llm.offline import OfflineProvider

    return OfflineProvider(model)


PROVIDERS: dict[str, Callable[[str, LlmConfig], Provider]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "local": _local,
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
        if config.anthropic_api_key:
            return Choice("anthropic", DEFAULT_ANTHROPIC_MODEL, "no AIOS_LLM set; an Anthropic key is set")
        return Choice("offline", DEFAULT_OFFLINE_MODEL, "no AIOS_LLM and no OpenAI or Anthropic key set")
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
    # Fail at start-up, not after a paid call: every model needs prices in the catalogue.
    load_catalogue().get(choice.provider, choice.model)
    return PROVIDERS[choice.provider](choice.model, config)


def make_deployments(config: LlmConfig, specs: Sequence[str] = ()) -> list[Deployment]:
    """One router deployment per ``'provider:model'`` spec, or the single one ``config`` selects.

    With no specs the router has one deployment, so a one-provider setup behaves as before.
    """
    if not specs:
        choice = resolve(config)
        specs = [f"{choice.provider}:{choice.model}"]
    deployments: list[Deployment] = []
    try:
        for spec in dict.fromkeys(specs):  # a spec named twice is one deployment
            provider = make_provider(replace(config, spec=spec))
            info = load_catalogue().get(provider.name, provider.model)
            deployments.append(Deployment(info.spec, provider, info))
    except BaseException:
        for built in deployments:  # do not leak the clients already opened
            _close_later(built.provider)
        raise
    return deployments


def _close_later(provider: Provider) -> None:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop: nothing was connected yet, the pool is only created on first use
    loop.create_task(provider.aclose())


def describe_choice(config: LlmConfig) -> str:
    """One human line saying which LLM will answer and why."""
    choice = resolve(config)
    if choice.provider == "offline":
        return f"LLM: offline provider ({choice.reason}) — results are labelled offline"
    return f"LLM: {choice.provider}:{choice.model} ({choice.reason})"
