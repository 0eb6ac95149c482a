"""The LLM config file (``AIOS_LLM_CONFIG``, TOML or JSON): the router's deployments with their
limits, and models the packaged catalogue does not know yet, with their prices.

::

    [[deployments]]
    model = "openai:gpt-4o-mini"          # provider:model
    api_key_env = "OPENAI_KEY_TEAM_A"     # the variable holding its key (default: AIOS_OPENAI_API_KEY)
    max_concurrent = 64                   # calls in flight at once
    rpm = 500                             # requests per minute
    tpm = 200000                          # tokens per minute

    [[models]]
    provider = "openai"
    model = "gpt-5-mini"
    context_window = 400000
    input_per_mtok = 0.25
    output_per_mtok = 2.0
    tier = "small"

    [[mcp.servers]]                       # MCP servers, and the tools each role may call:
    name = "calc"                         # see agents/mcp/config.py and docs/agents.md
    transport = "stdio"
    command = "calc-mcp"
    [mcp.roles]
    backend = ["calc.*"]

Only the file is read here; the variables it names are read by ``streams`` and passed in.
Every mistake is a ``ConfigError`` naming the file, the entry and what to fix.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from aios.agents.config_tables import known_table
from aios.agents.llm.catalogue import LOCAL, TIERS, ModelInfo, Tier, model_info
from aios.agents.llm.limits import Limits
from aios.agents.mcp.config import McpConfig, parse_mcp_section
from aios.schemas.errors import ConfigError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_DEPLOYMENT_KEYS = ("model", "name", "base_url", "api_key_env", "weight", "max_concurrent", "rpm", "tpm",
                    "context_window", "tier")
_MODEL_KEYS = ("provider", "model", "context_window", "input_per_mtok", "cached_input_per_mtok", "output_per_mtok",
               "tier", "local", "aliases")
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class DeploymentEntry:
    """One ``[[deployments]]`` entry; ``where`` names it in errors (file and index)."""

    where: str
    spec: str  # provider:model
    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    weight: float = 1.0
    limits: Limits = Limits()
    context_window: int | None = None
    tier: Tier | None = None

    @property
    def provider(self) -> str:
        return self.spec.partition(":")[0]

    @property
    def model(self) -> str:
        return self.spec.partition(":")[2]


@dataclass(frozen=True)
class LlmFile:
    """The whole file: where it came from, its deployments (maybe none) and its models."""

    origin: str
    deployments: tuple[DeploymentEntry, ...] = ()
    models: tuple[ModelInfo, ...] = ()
    mcp: McpConfig | None = None  # the [mcp] section: MCP servers and the tools each role may call


def read_llm_file(path: Path) -> LlmFile:
    """Read and check ``path`` (``.toml`` or ``.json``)."""
    origin = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"{origin}: AIOS_LLM_CONFIG must name a .toml or .json file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read the LLM config file ({exc.strerror}); fix AIOS_LLM_CONFIG") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{origin}: larger than {MAX_FILE_BYTES} bytes; is it the right file?")
    try:
        text = raw.decode("utf-8")
        data: Any = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{origin}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{origin}: not valid JSON: {exc}") from exc
    return parse_llm_file(data, origin)


def parse_llm_file(data: object, origin: str) -> LlmFile:
    """Check a decoded document; ``origin`` names it in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the file must hold a table (an object) with 'deployments' and/or 'models'")
    unknown = sorted(str(k) for k in data if k not in ("deployments", "models", "mcp"))
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level key {unknown[0]!r}; the file has 'deployments', 'models' "
                          "and 'mcp'")
    deployments = _list(data, "deployments", origin)
    models = _list(data, "models", origin)
    mcp = parse_mcp_section(data["mcp"], origin) if "mcp" in data else None
    if not deployments and not models and mcp is None:
        raise ConfigError(f"{origin}: no [[deployments]], no [[models]] and no [mcp]: the file configures nothing")
    entries = tuple(_deployment(entry, f"{origin} deployments[{i}]") for i, entry in enumerate(deployments))
    names: dict[str, str] = {}
    for entry in entries:
        if entry.name in names:
            raise ConfigError(f"{entry.where}: the name {entry.name!r} is taken by {names[entry.name]}; give "
                              "each deployment of the same model its own 'name'")
        names[entry.name] = entry.where
    infos = tuple(_model(entry, f"{origin} models[{i}]") for i, entry in enumerate(models))
    seen: set[tuple[str, str]] = set()
    for i, info in enumerate(infos):
        for name in (info.model, *info.aliases):
            if (info.provider, name) in seen:
                raise ConfigError(f"{origin} models[{i}]: {info.provider}:{name} is listed twice; keep one entry")
            seen.add((info.provider, name))
    return LlmFile(origin, entries, infos, mcp)


def _list(data: Mapping[str, Any], key: str, origin: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{origin}: '{key}' must be a list of tables ([[{key}]] in TOML, an array in JSON)")
    return value


def _deployment(entry: object, where: str) -> DeploymentEntry:
    fields = known_table(entry, where, _DEPLOYMENT_KEYS)
    spec = fields.get("model")
    if not isinstance(spec, str) or ":" not in spec.strip(":") or not spec.partition(":")[2].strip():
        raise ConfigError(f"{where}: 'model' must be 'provider:model', e.g. \"openai:gpt-4o-mini\" or "
                          f"\"local:llama3.2:1b\", not {spec!r}")
    spec = spec.strip()
    where = f"{where} ({spec})"
    name = _text(fields, "name", where) or spec
    base_url = _text(fields, "base_url", where)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'base_url' must be an http:// or https:// URL, not {base_url!r}")
    key_env = _text(fields, "api_key_env", where)
    if key_env is not None and not _ENV_NAME.match(key_env):
        raise ConfigError(f"{where}: 'api_key_env' must name an environment variable (letters, digits, _), "
                          f"not {key_env!r}")
    weight = _number(fields, "weight", where)
    concurrent = _number(fields, "max_concurrent", where, integer=True)
    window = _number(fields, "context_window", where, integer=True)
    tier = fields.get("tier")
    if tier is not None and tier not in TIERS:
        raise ConfigError(f"{where}: 'tier' must be one of {', '.join(TIERS)}, not {tier!r}")
    return DeploymentEntry(
        where=where, spec=spec, name=name, base_url=base_url, api_key_env=key_env,
        weight=1.0 if weight is None else weight,
        limits=Limits(max_concurrent=None if concurrent is None else int(concurrent),
                      rpm=_number(fields, "rpm", where), tpm=_number(fields, "tpm", where)),
        context_window=None if window is None else int(window), tier=cast(Tier | None, tier))


def _model(entry: object, where: str) -> ModelInfo:
    fields = known_table(entry, where, _MODEL_KEYS)
    local = fields.get("local", fields.get("provider") == LOCAL)
    if local is True:
        # A model the user runs costs nothing; it only needs a name (and may say its window, tier).
        fields = {"input_per_mtok": 0, "cached_input_per_mtok": 0, "output_per_mtok": 0, "tier": "small", **fields}
    elif "input_per_mtok" in fields and "cached_input_per_mtok" not in fields:
        fields = {**fields, "cached_input_per_mtok": fields["input_per_mtok"]}  # no cache discount known
    missing = [k for k in ("context_window", "input_per_mtok", "output_per_mtok", "tier") if k not in fields]
    if missing and local is not True:
        name = f"{fields.get('provider')}:{fields.get('model')}"
        raise ConfigError(f"{where} ({name}): a hosted model needs {', '.join(repr(m) for m in missing)}: its prices "
                          "(USD per million tokens) are what its calls are charged, never $0")
    if "context_window" in fields:
        return model_info({**fields, "local": local}, where)
    # A local model without a window takes AIOS_LOCAL_CONTEXT_WINDOW's (or the default): 0 says so.
    return replace(model_info({**fields, "local": local, "context_window": 1}, where), context_window=0)


def _text(fields: Mapping[str, Any], key: str, where: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: '{key}' must be a non-empty string, not {value!r}")
    return value.strip()


def _number(fields: Mapping[str, Any], key: str, where: str, *, integer: bool = False) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and value < 1e15
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{where}: '{key}' must be {kind} > 0, not {value!r}")
    return float(value)
