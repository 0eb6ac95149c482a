"""The role registry: what each specialist agent is, as data (``agents/roles.json``).

A role is a persona (its system prompt), the capabilities it declares, the model tier and routing
strategy it asks for by default, and an output contract: a JSON Schema its answer must meet, or
None for free text. Adding a role is adding an entry to the data file; there is no class per role.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

import jsonschema
from jsonschema.validators import Draft202012Validator

from aios.agents.llm.catalogue import TIERS, Tier, packaged_json
from aios.schemas.errors import ConfigError
from aios.schemas.jsonlimits import JsonTooDeepError, parse_json

ROLES_FILE = "agents/roles.json"
STRATEGIES = ("cost", "latency", "least-busy", "weighted")


class UnknownRoleError(ConfigError):
    """A role was named that the registry does not hold; the message lists the known ones."""


@dataclass(frozen=True)
class Role:
    """One specialist: its prompt, declared capabilities, default tier and strategy, and contract."""

    name: str
    persona: str
    capabilities: tuple[str, ...]
    tier: Tier
    strategy: str
    contract: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def structured(self) -> bool:
        """Whether answers must be JSON meeting :attr:`contract`."""
        return self.contract is not None

    def system_prompt(self) -> str:
        """The persona, the team it works in and, for structured roles, the contract to meet."""
        prompt = (
            f"You are the {self.name} agent in AIOS, a team of cooperating AI agents. {self.persona}"
        )
        if self.contract is not None:
            prompt += (
                "\n\nAnswer with one JSON object and nothing else, meeting this JSON Schema:\n"
                + json.dumps(self.contract, separators=(",", ":"), sort_keys=True)
            )
        return prompt

    def validate(self, text: str) -> tuple[str, str | None]:
        """``(output, None)`` when ``text`` meets the contract, else ``(text, what is wrong)``.

        A valid structured answer is returned as compact JSON, so dependents read one canonical form.
        """
        if self.contract is None:
            return text, None
        try:
            value = parse_json(_unfenced(text))
        except json.JSONDecodeError as exc:
            return text, f"the answer is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        except JsonTooDeepError as exc:
            return text, f"the answer is {exc}; keep to the schema's shape"
        error = jsonschema.exceptions.best_match(_validator(self.name, self.contract).iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(the whole answer)"
            return text, f"{where}: {error.message}"
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")), None


class RoleRegistry:
    """Roles by name, validated when loaded."""

    def __init__(self, roles: Mapping[str, Role], *, version: int, origin: str = ROLES_FILE) -> None:
        self.version = version
        self.origin = origin
        self._roles = dict(roles)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = ROLES_FILE) -> RoleRegistry:
        """Validate the decoded document; raise ``ConfigError`` naming the bad entry."""
        version, entries = data.get("version"), data.get("roles")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"{origin}: 'version' must be a positive integer")
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{origin}: 'roles' must be a non-empty object of role name -> role")
        roles = {name: _role(name, entry, f"{origin} roles.{name}") for name, entry in entries.items()}
        return cls(roles, version=version, origin=origin)

    def get(self, name: str) -> Role:
        """The role called ``name``; raise ``UnknownRoleError`` listing the known roles."""
        role = self._roles.get(name)
        if role is None:
            raise UnknownRoleError(
                f"unknown role {name!r}: known roles are {', '.join(self.names())} "
                f"(add one to {self.origin})"
            )
        return role

    def names(self) -> tuple[str, ...]:
        return tuple(self._roles)

    def __contains__(self, name: object) -> bool:
        return name in self._roles

    def __iter__(self) -> Iterator[Role]:
        return iter(self._roles.values())


@cache
def load_roles() -> RoleRegistry:
    """The registry shipped with the package (read once, then cached)."""
    return RoleRegistry.from_dict(packaged_json("aios.agents", "roles.json", ROLES_FILE))


def _role(name: str, entry: object, where: str) -> Role:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    fields = cast(dict[str, Any], entry)
    persona, capabilities = fields.get("persona"), fields.get("capabilities")
    tier, strategy, contract = fields.get("tier"), fields.get("strategy", "cost"), fields.get("contract")
    if not isinstance(persona, str) or not persona.strip():
        raise ConfigError(f"{where}: 'persona' must be a non-empty string")
    if not isinstance(capabilities, list) or not all(isinstance(c, str) and c for c in capabilities):
        raise ConfigError(f"{where}: 'capabilities' must be a list of names")
    if tier not in TIERS:
        raise ConfigError(f"{where}: 'tier' must be one of {', '.join(TIERS)}, not {tier!r}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}: 'strategy' must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if contract is not None:
        if not isinstance(contract, dict):
            raise ConfigError(f"{where}: 'contract' must be a JSON Schema object or null")
        try:
            Draft202012Validator.check_schema(contract)
        except jsonschema.exceptions.SchemaError as exc:
            raise ConfigError(f"{where}: 'contract' is not a valid JSON Schema: {exc.message}") from exc
    return Role(name, persona.strip(), tuple(capabilities), cast(Tier, tier), strategy,
                cast(Mapping[str, Any] | None, contract))


_validators: dict[str, Draft202012Validator] = {}


def _validator(name: str, contract: Mapping[str, Any]) -> Draft202012Validator:
    # Building a validator compiles the schema; once per role is enough.
    validator = _validators.get(name)
    if validator is None or validator.schema is not contract:
        validator = _validators[name] = Draft202012Validator(contract)
    return validator


def _unfenced(text: str) -> str:
    # Models often wrap JSON in a Markdown code fence even when told not to; that is not an error.
    stripped = text.strip()
    if stripped.startswith("```"):
        first_newline = stripped.find("\n")
        if first_newline != -1 and stripped.endswith("```"):
            return stripped[first_newline + 1 : -3].strip()
    return stripped
