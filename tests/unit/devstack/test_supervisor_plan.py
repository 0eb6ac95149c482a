"""What `aios up` runs for given settings, and the settings that shape it."""

from __future__ import annotations

import pytest

from aios.agents.roles import load_roles
from aios.devstack.supervisor import plan
from aios.schemas.errors import ConfigError
from aios.streams.settings import load_settings


def test_by_default_every_role_one_agent_process_the_chdb_owner_first_and_the_api() -> None:
    settings = load_settings()
    assert settings.processing.roles == load_roles().names()
    specs = plan(settings, api=True)
    assert [s.name for s in specs] == ["clickhouse", "orchestrator", "results", "agents", "memory", "history",
                                      "json-ingress", "json-egress", "api"]
    assert specs[0].store and specs[0].argv == ("serve", "clickhouse")
    agents = next(s for s in specs if s.name == "agents")
    assert agents.argv[:2] == ("worker", "agents") and agents.argv[2::2] == ("--role",) * len(load_roles().names())


def test_vector_memory_adds_the_qdrant_owner_and_a_server_url_removes_an_owner() -> None:
    names = [s.name for s in plan(load_settings(vector_memory=True), api=False)]
    assert names[:2] == ["clickhouse", "qdrant"] and "api" not in names
    served = plan(load_settings(vector_memory=True, clickhouse_url="http://ch:8123", qdrant_url="http://q:6333"),
                  api=False)
    assert not any(s.store for s in served)


def test_agent_groups_spread_roles_over_processes() -> None:
    settings = load_settings(roles="general,planner,qa,writer", agent_groups="planner; qa,writer")
    agents = [s for s in plan(settings, api=False) if s.name.startswith("agents")]
    assert [(s.name, s.argv[3::2]) for s in agents] == [
        ("agents-1", ("planner",)), ("agents-2", ("qa", "writer")), ("agents-3", ("general",))]


@pytest.mark.parametrize(("groups", "error"), [
    ("planner;planner", "twice"), ("astronaut", "AIOS_ROLES does not"),
])
def test_bad_agent_groups_name_the_variable(groups: str, error: str) -> None:
    with pytest.raises(ConfigError, match=f"AIOS_AGENT_GROUPS.*{error}"):
        load_settings(roles="general,planner", agent_groups=groups)
