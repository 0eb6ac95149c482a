"""The model catalogue: the shipped models.json is valid, lookups are strict, costs follow usage."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from aios.agents.errors import LLMError, UnknownModelError
from aios.agents.llm.anthropic_provider import DEFAULT_MODEL as ANTHROPIC_DEFAULT
from aios.agents.llm.base import Usage
from aios.agents.llm.catalogue import TIERS, Catalogue, ModelInfo, cost_usd, load_catalogue
from aios.agents.llm.factory import DEFAULT_ANTHROPIC_MODEL, DEFAULT_OFFLINE_MODEL, DEFAULT_OPENAI_MODEL
from aios.schemas.errors import ConfigError


def _document() -> dict[str, Any]:
    text = resources.files("aios.agents.llm").joinpath("models.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def test_shipped_catalogue_loads_with_provenance() -> None:
    catalogue = load_catalogue()
    assert catalogue.version >= 1
    assert catalogue.as_of and "anthropic.com" in catalogue.source and "openai.com" in catalogue.source
    assert len(catalogue) == len(_document()["models"])
    assert {m.provider for m in catalogue} >= {"openai", "anthropic", "offline", "local"}


def test_every_entry_is_valid() -> None:
    for info in load_catalogue():
        assert info.context_window > 0
        assert info.tier in TIERS
        assert min(info.input_per_mtok, info.cached_input_per_mtok, info.output_per_mtok) >= 0
        assert info.cached_input_per_mtok <= info.input_per_mtok, info.spec
        if info.local:
            assert info.input_per_mtok == info.output_per_mtok == 0, info.spec
        else:
            assert info.input_per_mtok > 0 and info.output_per_mtok > 0, info.spec


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4o"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-4.1-mini"),
        ("anthropic", "claude-3-5-haiku-latest"),
        ("anthropic", "claude-sonnet-4-20250514"),
        ("anthropic", "claude-opus-4-1"),
        ("offline", "echo"),
    ],
)
def test_expected_models_are_listed(provider: str, model: str) -> None:
    assert (provider, model) in load_catalogue()


def test_default_models_of_the_factory_are_priced() -> None:
    catalogue = load_catalogue()
    assert ANTHROPIC_DEFAULT == DEFAULT_ANTHROPIC_MODEL
    for provider, model in (
        ("openai", DEFAULT_OPENAI_MODEL),
        ("anthropic", DEFAULT_ANTHROPIC_MODEL),
        ("offline", DEFAULT_OFFLINE_MODEL),
    ):
        assert catalogue.get(provider, model).provider == provider


def test_aliases_resolve_to_the_dated_entry() -> None:
    catalogue = load_catalogue()
    info = catalogue.get("anthropic", "claude-3-5-haiku-latest")
    assert info.model == "claude-3-5-haiku-20241022"
    assert info is catalogue.get("anthropic", "claude-3-5-haiku-20241022")
    assert info.spec == "anthropic:claude-3-5-haiku-20241022"


def test_offline_echo_is_free_and_local() -> None:
    info = load_catalogue().get("offline", "echo")
    assert info.local and cost_usd(info, Usage(1_000_000, 1_000_000)) == 0.0


def test_unknown_model_says_where_to_add_it() -> None:
    catalogue = load_catalogue()
    with pytest.raises(UnknownModelError) as caught:
        catalogue.get("openai", "gpt-9-ultra")
    assert str(caught.value) == (
        f"model 'gpt-9-ultra' of provider 'openai' is not in the catalogue "
        f"(agents/llm/models.json, version {catalogue.version}); add it with its prices to a [[models]] entry "
        "of the file AIOS_LLM_CONFIG names (docs/agents.md)"
    )
    assert isinstance(caught.value, LLMError)
    assert (caught.value.provider, caught.value.model) == ("openai", "gpt-9-ultra")
    with pytest.raises(UnknownModelError):
        catalogue.get("anthropic", "gpt-4o-mini")  # a model is looked up under its own provider


INFO = ModelInfo(
    provider="acme",
    model="m",
    context_window=1000,
    input_per_mtok=3.0,
    cached_input_per_mtok=0.3,
    output_per_mtok=15.0,
    tier="medium",
    local=False,
)


def test_cost_from_usage() -> None:
    assert cost_usd(INFO, Usage(1_000_000, 0)) == pytest.approx(3.0)
    assert cost_usd(INFO, Usage(0, 1_000_000)) == pytest.approx(15.0)
    assert cost_usd(INFO, Usage(2_000, 500)) == pytest.approx((2_000 * 3.0 + 500 * 15.0) / 1e6)


def test_cached_input_is_billed_at_the_cached_price() -> None:
    # 10k prompt tokens of which 8k came from the cache: 2k at 3.0, 8k at 0.3, plus 100 output.
    usage = Usage(10_000, 100, cached_input_tokens=8_000)
    assert cost_usd(INFO, usage) == pytest.approx((2_000 * 3.0 + 8_000 * 0.3 + 100 * 15.0) / 1e6)
    assert cost_usd(INFO, usage) < cost_usd(INFO, Usage(10_000, 100))


def test_usage_stays_backward_compatible() -> None:
    assert Usage(5, 7) == Usage(input_tokens=5, output_tokens=7, cached_input_tokens=0)


def test_real_prices_spot_check() -> None:
    info = load_catalogue().get("openai", "gpt-4o-mini")
    assert cost_usd(info, Usage(1_000_000, 1_000_000)) == pytest.approx(0.15 + 0.60)


def _broken(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(_document())
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("version"), "'version'"),
        (lambda d: d.update(source=""), "'source'"),
        (lambda d: d.update(models=[]), "'models'"),
        (lambda d: d["models"][0].update(tier="huge"), "'tier'"),
        (lambda d: d["models"][0].update(context_window=0), "'context_window'"),
        (lambda d: d["models"][0].update(input_per_mtok=-1), "'input_per_mtok'"),
        (lambda d: d["models"][0].pop("output_per_mtok"), "'output_per_mtok'"),
        (lambda d: d["models"][0].update(local="no"), "'local'"),
        (lambda d: d["models"][0].update(input_per_mtok=0, output_per_mtok=0), "cannot be free"),
        (lambda d: d["models"].append(dict(d["models"][0])), "listed twice"),
    ],
)
def test_invalid_documents_are_rejected_with_the_entry_named(mutate: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Catalogue.from_dict(_broken(mutate))
    assert "agents/llm/models.json" in str(caught.value)
