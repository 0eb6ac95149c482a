"""Choose a provider from a ``'provider:model'`` spec: one registry, backends imported lazily."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from aios.agents.errors import UnknownModelError
from aios.agents.llm.base import LlmConfig, Provider
from aios.agents.llm.catalogue import Catalogue, load_catalogue
from aios.agents.llm.configfile import DeploymentEntry, LlmFile
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


def make_provider(config: LlmConfig, catalogue: Catalogue | None = None) -> Provider:
    """Build the provider ``config`` selects; raise ``ConfigError`` saying what to fix."""
    choice = resolve(config)
    # Fail at start-up, not after a paid call: every remote model needs prices in the catalogue.
    (catalogue or load_catalogue()).get(choice.provider, choice.model)
    return PROVIDERS[choice.provider](choice.model, config)


def make_deployments(config: LlmConfig, specs: Sequence[str] = (), catalogue: Catalogue | None = None) -> list[Deployment]:
    """One router deployment per ``'provider:model'`` spec, or the single one ``config`` selects.

    With no specs the router has one deployment, so a one-provider setup behaves as before.
    """
    catalogue = catalogue or load_catalogue()
    if not specs:
        choice = resolve(config)
        specs = [f"{choice.provider}:{choice.model}"]
    deployments: list[Deployment] = []
    try:
        for spec in dict.fromkeys(specs):  # a spec named twice is one deployment
            provider = make_provider(replace(config, spec=spec), catalogue)
            info = catalogue.get(provider.name, provider.model)
            deployments.append(Deployment(info.spec, provider, info))
    except BaseException:
        _close_all(deployments)
        raise
    return deployments


def file_deployments(config: LlmConfig, file: LlmFile, catalogue: Catalogue,
                     keys: Mapping[str, str]) -> list[Deployment]:
    """The deployments of an ``AIOS_LLM_CONFIG`` file; ``keys`` holds the variables its entries name
    in ``api_key_env`` (read by ``streams``). ``config`` gives the keys and URLs they leave out."""
    deployments: list[Deployment] = []
    try:
        for entry in file.deployments:
            deployments.append(_file_deployment(config, entry, catalogue, keys))
    except BaseException:
        _close_all(deployments)
        raise
    return deployments


def _file_deployment(config: LlmConfig, entry: DeploymentEntry, catalogue: Catalogue,
                     keys: Mapping[str, str]) -> Deployment:
    provider, model = entry.provider.strip().lower(), entry.model.strip()
    if provider not in PROVIDERS:
        raise ConfigError(f"{entry.where}: unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}")
    key: str | None = None
    if entry.api_key_env is not None:
        key = keys.get(entry.api_key_env)
        if not key:
            raise ConfigError(f"{entry.where}: api_key_env names {entry.api_key_env}, which is not set: export it")
    url = entry.base_url
    own = replace(config, spec=f"{provider}:{model}")
    if provider == "openai":
        own = replace(own, openai_base_url=url or config.openai_base_url, openai_api_key=key or config.openai_api_key)
    elif provider == "anthropic":
        own = replace(own, anthropic_base_url=url or config.anthropic_base_url,
                      anthropic_api_key=key or config.anthropic_api_key)
    elif provider == "local":
        own = replace(own, local_base_url=url or config.local_base_url)
    try:
        info = catalogue.get(provider, model)
        built = PROVIDERS[provider](model, own)
    except (ConfigError, UnknownModelError) as exc:
        raise ConfigError(f"{entry.where}: {exc}") from exc
    if entry.context_window is not None:
        info = replace(info, context_window=entry.context_window)
    if entry.tier is not None:
        info = replace(info, tier=entry.tier)
    return Deployment(entry.name, built, info, weight=entry.weight, limits=entry.limits)


def _close_all(deployments: Sequence[Deployment]) -> None:
    for built in deployments:  # do not leak the clients already opened
        _close_later(built.provider)


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
