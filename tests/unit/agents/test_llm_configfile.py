"""The LLM config file and the catalogue it extends: what a file may say, every mistake a clear
ConfigError naming the file, the entry and the fix, and any local model free and known."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios.agents.errors import UnknownModelError
from aios.agents.llm.base import LlmConfig, Usage
from aios.agents.llm.catalogue import DEFAULT_LOCAL_WINDOW, cost_usd, load_catalogue
from aios.agents.llm.configfile import parse_llm_file, read_llm_file
from aios.agents.llm.factory import file_deployments, make_deployments
from aios.agents.llm.limits import Limits
from aios.schemas.errors import ConfigError

TOML = """
[[deployments]]
model = "openai:gpt-5-mini"
name = "team-a"
api_key_env = "KEY_A"
max_concurrent = 8
rpm = 500
tpm = 200000

[[deployments]]
model = "local:llama3.2:1b"
base_url = "http://127.0.0.1:9/v1"
context_window = 4096
tier = "medium"
weight = 2.5

[[models]]
provider = "openai"
model = "gpt-5-mini"
context_window = 400000
input_per_mtok = 0.25
output_per_mtok = 2.0
tier = "small"

[[models]]
provider = "local"
model = "qwen3:30b"
context_window = 40960
"""


def test_a_toml_file_and_its_json_twin(tmp_path: Path) -> None:
    toml = tmp_path / "llm.toml"
    toml.write_text(TOML)
    parsed = read_llm_file(toml)
    assert [(d.name, d.spec) for d in parsed.deployments] == [("team-a", "openai:gpt-5-mini"),
                                                            ("local:llama3.2:1b", "local:llama3.2:1b")]
    a, local = parsed.deployments
    assert a.limits == Limits(max_concurrent=8, rpm=500, tpm=200_000) and a.api_key_env == "KEY_A"
    assert (local.base_url, local.context_window, local.tier, local.weight) == ("http://127.0.0.1:9/v1", 4096,
                                                                               "medium", 2.5)
    assert local.limits == Limits() and not local.limits.any
    mini, qwen = parsed.models
    assert mini.cached_input_per_mtok == 0.25, "no cache price given: the input price, never a discount"
    assert (qwen.local, qwen.input_per_mtok, qwen.tier) == (True, 0.0, "small")
    import tomllib

    twin = tmp_path / "llm.json"
    twin.write_text(json.dumps(tomllib.loads(TOML)))
    same = read_llm_file(twin)
    assert [replace(d, where="") for d in same.deployments] == [replace(d, where="") for d in parsed.deployments]
    assert same.models == parsed.models and same.origin == str(twin)


def test_deployments_from_a_file_with_their_keys_urls_limits_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "llm.toml"
    path.write_text(TOML)
    file = read_llm_file(path)
    catalogue = load_catalogue().extended(file.models, origin=file.origin)
    built = file_deployments(LlmConfig(), file, catalogue, {"KEY_A": "sk-a"})
    assert [d.name for d in built] == ["team-a", "local:llama3.2:1b"]
    assert built[0].limits.rpm == 500 and built[0].info.input_per_mtok == 0.25
    assert (built[1].info.context_window, built[1].info.tier, built[1].weight) == (4096, "medium", 2.5)
    with pytest.raises(ConfigError, match=r"llm.toml deployments\[0\] \(openai:gpt-5-mini\): api_key_env names "
                                          r"KEY_A, which is not set: export it"):
        file_deployments(LlmConfig(), file, catalogue, {})
    with pytest.raises(ConfigError, match=r"deployments\[0\] \(openai:gpt-5-mini\): model 'gpt-5-mini' of provider "
                                          r"'openai' is not in the catalogue.*\[\[models\]\]"):
        file_deployments(LlmConfig(), file, load_catalogue(), {"KEY_A": "sk-a"})


def test_any_local_model_is_known_and_free_and_remote_ones_need_a_price() -> None:
    catalogue = load_catalogue()
    info = catalogue.get("local", "llama3.2:1b")
    assert (info.local, info.context_window, info.tier) == (True, DEFAULT_LOCAL_WINDOW, "small")
    assert cost_usd(info, Usage(1_000_000, 1_000_000)) == 0.0
    assert catalogue.get("local", "llama3.1:8b").context_window == 131072  # the packaged window
    assert ("local", "anything/at:all") in catalogue
    windowed = catalogue.extended((), origin="", local_window=16384)
    assert windowed.get("local", "llama3.2:1b").context_window == 16384
    assert windowed.get("local", "llama3.1:8b").context_window == 16384, "the setting says how the server runs it"
    with pytest.raises(UnknownModelError, match="gpt-5-mini.*add it with its prices"):
        catalogue.get("openai", "gpt-5-mini")
    file = parse_llm_file(json.loads(json.dumps({"models": [
        {"provider": "local", "model": "qwen3:30b", "context_window": 40960, "tier": "large"},
        {"provider": "local", "model": "phi4"},
        {"provider": "openai", "model": "gpt-4o-mini", "context_window": 128000, "input_per_mtok": 0.2,
         "output_per_mtok": 0.8, "tier": "small"}]})), "f.json")
    extended = catalogue.extended(file.models, origin="f.json", local_window=16384)
    assert extended.get("local", "qwen3:30b").context_window == 40960, "a model's own entry wins"
    assert extended.get("local", "qwen3:30b").tier == "large"
    assert extended.get("local", "phi4").context_window == 16384, "no window in its entry: the setting's"
    assert extended.get("openai", "gpt-4o-mini").input_per_mtok == 0.2, "the file replaces a packaged price"
    assert len([m for m in extended if m.spec == "openai:gpt-4o-mini"]) == 1
    assert "f.json" in extended.origin


async def test_local_any_name_through_the_short_forms() -> None:
    config = LlmConfig(spec="local:llama3.2:1b", local_base_url="http://127.0.0.1:9/v1")
    (only,) = make_deployments(config)
    assert (only.name, only.info.context_window, only.info.input_per_mtok) == ("local:llama3.2:1b", 8192, 0.0)
    await only.provider.aclose()
    with pytest.raises(UnknownModelError):
        make_deployments(LlmConfig(spec="openai:gpt-5-mini", openai_api_key="k"))


def _entry(**fields: Any) -> dict[str, Any]:
    return {"deployments": [{"model": "openai:gpt-4o-mini", **fields}]}


@pytest.mark.parametrize(("document", "message"), [
    ([1, 2], r"f.toml: the file must hold a table"),
    ({}, r"f.toml: no \[\[deployments\]\], no \[\[models\]\] and no \[mcp\]"),
    ({"deployment": []}, r"f.toml: unknown top-level key 'deployment'; the file has 'deployments', 'models' and 'mcp'"),
    ({"deployments": {"model": "openai:gpt-4o-mini"}}, r"'deployments' must be a list of tables"),
    ({"deployments": ["openai:gpt-4o-mini"]}, r"deployments\[0\] must be a table \(an object\), not str"),
    (_entry(rmp=10), r"deployments\[0\]: unknown key 'rmp'; known: model, name, base_url, api_key_env, weight, "
                     r"max_concurrent, rpm, tpm, context_window, tier"),
    ({"deployments": [{"model": "gpt-4o-mini"}]}, r"deployments\[0\]: 'model' must be 'provider:model'"),
    ({"deployments": [{"model": "openai:"}]}, r"'model' must be 'provider:model'"),
    ({"deployments": [{}]}, r"'model' must be 'provider:model'.*not None"),
    (_entry(rpm=-5), r"deployments\[0\] \(openai:gpt-4o-mini\): 'rpm' must be a number > 0, not -5"),
    (_entry(tpm="lots"), r"'tpm' must be a number > 0, not 'lots'"),
    (_entry(rpm=True), r"'rpm' must be a number > 0, not True"),
    (_entry(max_concurrent=2.5), r"'max_concurrent' must be a whole number > 0, not 2.5"),
    (_entry(weight=0), r"'weight' must be a number > 0, not 0"),
    (_entry(base_url="localhost:11434/v1"), r"'base_url' must be an http:// or https:// URL"),
    (_entry(api_key_env="MY KEY"), r"'api_key_env' must name an environment variable"),
    (_entry(name=""), r"'name' must be a non-empty string"),
    (_entry(tier="huge"), r"'tier' must be one of small, medium, large, not 'huge'"),
    ({"deployments": [{"model": "openai:gpt-4o-mini"}, {"model": "openai:gpt-4o-mini", "api_key_env": "K2"}]},
     r"deployments\[1\] \(openai:gpt-4o-mini\): the name 'openai:gpt-4o-mini' is taken by f.toml deployments\[0\]"
     r".*give each deployment of the same model its own 'name'"),
    ({"models": [{"provider": "openai", "model": "gpt-5", "context_window": 400000, "tier": "large"}]},
     r"models\[0\] \(openai:gpt-5\): a hosted model needs 'input_per_mtok', 'output_per_mtok': its prices"),
    ({"models": [{"provider": "openai", "model": "gpt-5", "context_window": 400000, "tier": "large",
                  "input_per_mtok": 0, "output_per_mtok": 0}]}, r"models\[0\] \(openai:gpt-5\): a hosted model cannot "
                                                               r"be free; give its prices"),
    ({"models": [{"provider": "local", "model": "m", "context_window": -1}]},
     r"models\[0\] \(local:m\): 'context_window' must be a positive integer"),
    ({"models": [{"provider": "local", "model": "m", "price": 1}]}, r"models\[0\]: unknown key 'price'"),
    ({"models": [{"provider": "local", "model": "m"}, {"provider": "local", "model": "m"}]},
     r"f.toml models\[1\]: local:m is listed twice; keep one entry"),
])
def test_every_mistake_names_the_file_the_entry_and_the_fix(document: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_llm_file(document, "f.toml")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("llm.toml", "[[deployments]\nmodel = 1", r"llm.toml: not valid TOML: .*line 1"),
    ("llm.json", '{"deployments": [}', r"llm.json: not valid JSON: .*line 1 column 18"),
    ("llm.yaml", "deployments: []", r"llm.yaml: AIOS_LLM_CONFIG must name a .toml or .json file"),
    ("llm.json", "[" * 100_000, r"llm.json: not valid JSON"),
])
def test_an_unreadable_file_names_itself(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("llm.", f"{tmp_path}/llm.")):
        read_llm_file(path)
    with pytest.raises(ConfigError, match="cannot read the LLM config file"):
        read_llm_file(tmp_path / "missing.toml")
    path.write_bytes(b"\xff\xfe[[deployments]]")
    with pytest.raises(ConfigError, match="not UTF-8 text|AIOS_LLM_CONFIG must name"):
        read_llm_file(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=25)
keys = st.sampled_from(["model", "name", "base_url", "api_key_env", "weight", "max_concurrent", "rpm", "tpm",
                        "context_window", "tier", "provider", "input_per_mtok", "output_per_mtok", "local",
                        "aliases", "cached_input_per_mtok"])
entries = st.dictionaries(keys, json_values | st.sampled_from(["openai:gpt-4o-mini", "local:m", "small", 5, 0.5]),
                          max_size=8)
documents = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"deployments": st.lists(entries, max_size=4) | json_values,
                                        "models": st.lists(entries, max_size=4) | json_values}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_document_is_a_file_or_a_config_error(document: object) -> None:
    try:
        file = parse_llm_file(document, "f.json")
    except ConfigError as exc:
        assert str(exc).startswith("f.json")
        return
    for entry in file.deployments:
        concurrent = entry.limits.max_concurrent
        assert ":" in entry.spec and (concurrent is None or (isinstance(concurrent, int) and concurrent >= 1))
    load_catalogue().extended(file.models, origin="f.json")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([".toml", ".json"]))
def test_any_bytes_are_a_file_or_a_config_error(tmp_path_factory: pytest.TempPathFactory, raw: bytes,
                                                 suffix: str) -> None:
    path = tmp_path_factory.mktemp("f") / f"llm{suffix}"
    path.write_bytes(raw)
    try:
        read_llm_file(path)
    except ConfigError:
        pass
