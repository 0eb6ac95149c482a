"""The model catalogue: context windows, tiers and prices from the versioned ``models.json``.

Costs are computed from the usage a provider reported; a remote model missing from the catalogue
raises :class:`~agents.errors.UnknownModelError` rather than being priced at $0. Users add newer
models, with their prices, in the file ``AIOS_LLM_CONFIG`` names (:meth:`Catalogue.extended`).
Local models cost nothing, so ``local:<any name>`` is always known: its context window comes from
that file, the ``local_window`` setting, the packaged entry, or :data:`DEFAULT_LOCAL_WINDOW`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, cast, get_args

from aios.agents.errors import UnknownModelError
from aios.agents.llm.base import Usage
from aios.schemas.errors import ConfigError

Tier = Literal["small", "medium", "large"]
TIERS: tuple[Tier, ...] = get_args(Tier)
CATALOGUE_FILE = "agents/llm/models.json"
LOCAL = "local"  # the provider of OpenAI-compatible servers a user runs (Ollama, vLLM, llama.cpp)
# What a local server gives a model it was not told otherwise about, at least (Ollama's default is
# 4096 or more; vLLM and llama.cpp take the model's own): AIOS_LOCAL_CONTEXT_WINDOW says better.
DEFAULT_LOCAL_WINDOW = 8192
_PER = 1_000_000


@dataclass(frozen=True)
class ModelInfo:
    """One model of one provider: its context window, tier and prices in USD per million tokens."""

    provider: str
    model: str
    context_window: int
    input_per_mtok: float
    cached_input_per_mtok: float
    output_per_mtok: float
    tier: Tier
    local: bool
    aliases: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        """The ``'provider:model'`` string that selects this model."""
        return f"{self.provider}:{self.model}"


class Catalogue:
    """An immutable, validated set of :class:`ModelInfo`, looked up by provider and model (or alias)."""

    def __init__(
        self, models: tuple[ModelInfo, ...], *, version: int, as_of: str, source: str, origin: str,
        local_window: int | None = None,
    ) -> None:
        self.version = version
        self.as_of = as_of
        self.source = source
        self.origin = origin
        self.local_window = local_window  # every local model's window, unless its own entry says
        self._models = models
        self._index: dict[tuple[str, str], ModelInfo] = _index(models, origin)
        self._added: frozenset[tuple[str, str]] = frozenset()  # keys a user's file gave
        self._local: dict[str, ModelInfo] = {}

    def extended(self, models: Sequence[ModelInfo], *, origin: str, local_window: int | None = None) -> Catalogue:
        """This catalogue with ``models`` (from a user's file named ``origin``) added, each replacing
        a packaged entry of the same name, and ``local_window`` for local models."""
        added = _index(tuple(models), origin)
        replaced = {self._index[key].spec for key in added if key in self._index}
        kept = tuple(m for m in self._models if m.spec not in replaced)
        out = Catalogue(kept + tuple(models), version=self.version, as_of=self.as_of, source=self.source,
                        origin=f"{self.origin} + {origin}" if models else self.origin, local_window=local_window)
        out._added = frozenset(added)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = CATALOGUE_FILE) -> Catalogue:
        """Validate and build a catalogue from the decoded JSON document."""
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"{origin}: 'version' must be a positive integer, not {version!r}")
        as_of, source, entries = data.get("as_of"), data.get("source"), data.get("models")
        if not isinstance(as_of, str) or not isinstance(source, str) or not as_of or not source:
            raise ConfigError(f"{origin}: 'as_of' and 'source' must say where the prices come from")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{origin}: 'models' must be a non-empty list")
        models = tuple(model_info(entry, f"{origin} models[{i}]") for i, entry in enumerate(entries))
        return cls(models, version=version, as_of=as_of, source=source, origin=origin)

    def get(self, provider: str, model: str) -> ModelInfo:
        """The entry for ``model`` of ``provider``; raise ``UnknownModelError`` when there is none."""
        info = self._index.get((provider, model))
        if provider == LOCAL and not (info is not None and info.context_window and (provider, model) in self._added):
            return self._local_model(model, info)
        if info is None:
            raise UnknownModelError(
                provider=provider, model=model, catalogue=self.origin, version=self.version
            )
        return info

    def _local_model(self, model: str, listed: ModelInfo | None) -> ModelInfo:
        # Any name a local server serves is a model: free, and small unless an entry says otherwise.
        # Its window: the local_window setting, else its entry's, else the default.
        info = self._local.get(model)
        if info is None:
            window = self.local_window or (listed.context_window if listed else 0) or DEFAULT_LOCAL_WINDOW
            info = ModelInfo(provider=LOCAL, model=listed.model if listed else model, context_window=window,
                             input_per_mtok=0.0, cached_input_per_mtok=0.0, output_per_mtok=0.0,
                             tier=listed.tier if listed else "small", local=True,
                             aliases=listed.aliases if listed else ())
            self._local[model] = info
        return info

    def models(self, provider: str | None = None) -> tuple[ModelInfo, ...]:
        """Every entry, or those of ``provider``, in file order."""
        return tuple(m for m in self._models if provider is None or m.provider == provider)

    def __contains__(self, key: object) -> bool:
        return key in self._index or (isinstance(key, tuple) and len(key) == 2 and key[0] == LOCAL)

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)


def _index(models: tuple[ModelInfo, ...], origin: str) -> dict[tuple[str, str], ModelInfo]:
    index: dict[tuple[str, str], ModelInfo] = {}
    for info in models:
        for name in (info.model, *info.aliases):
            key = (info.provider, name)
            if key in index:
                raise ConfigError(f"{origin}: {info.provider}:{name} is listed twice")
            index[key] = info
    return index


def packaged_json(package: str, filename: str, origin: str) -> dict[str, Any]:
    """A JSON object shipped inside ``package``; ``ConfigError`` naming ``origin`` when it is not one."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a JSON object")
    return data


@cache
def load_catalogue() -> Catalogue:
    """The catalogue shipped with the package (read once, then cached)."""
    return Catalogue.from_dict(packaged_json("aios.agents.llm", "models.json", CATALOGUE_FILE))


def cost_usd(info: ModelInfo, usage: Usage) -> float:
    """What ``usage`` cost on ``info``'s model: uncached input, cached input and output tokens."""
    cached = min(max(usage.cached_input_tokens, 0), usage.input_tokens)
    uncached = usage.input_tokens - cached
    return (
        uncached * info.input_per_mtok
        + cached * info.cached_input_per_mtok
        + usage.output_tokens * info.output_per_mtok
    ) / _PER


def model_info(entry: object, where: str) -> ModelInfo:
    """One validated catalogue entry; ``ConfigError`` naming ``where`` and the field to fix."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    fields = cast(dict[str, Any], entry)
    provider, model = fields.get("provider"), fields.get("model")
    if not isinstance(provider, str) or not isinstance(model, str) or not provider or not model:
        raise ConfigError(f"{where}: 'provider' and 'model' must be non-empty strings")
    where = f"{where} ({provider}:{model})"
    window = fields.get("context_window")
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise ConfigError(f"{where}: 'context_window' must be a positive integer")
    prices = {name: _price(fields, name, where) for name in _PRICE_FIELDS}
    tier, local, aliases = fields.get("tier"), fields.get("local"), fields.get("aliases", [])
    if tier not in TIERS:
        raise ConfigError(f"{where}: 'tier' must be one of {', '.join(TIERS)}, not {tier!r}")
    if not isinstance(local, bool):
        raise ConfigError(f"{where}: 'local' must be true or false")
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError(f"{where}: 'aliases' must be a list of model names")
    if not local and prices["input_per_mtok"] == 0 and prices["output_per_mtok"] == 0:
        raise ConfigError(f"{where}: a hosted model cannot be free; give its prices")
    return ModelInfo(
        provider=provider,
        model=model,
        context_window=window,
        tier=cast(Tier, tier),
        local=local,
        aliases=tuple(cast(list[str], aliases)),
        input_per_mtok=prices["input_per_mtok"],
        cached_input_per_mtok=prices["cached_input_per_mtok"],
        output_per_mtok=prices["output_per_mtok"],
    )


_PRICE_FIELDS = ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok")


def _price(fields: Mapping[str, Any], name: str, where: str) -> float:
    value = fields.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: {name!r} must be a price >= 0 in USD per million tokens")
    return float(value)
