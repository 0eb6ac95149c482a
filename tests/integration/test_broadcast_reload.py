"""The reload broadcast on a live agent worker: the LLM config (AIOS_LLM_CONFIG) and the roles are
read again; a broken file is refused and the one in use kept."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from aios.agents.llm import catalogue
from aios.agents.llm.servers.openai import FakeOpenAI, ok
from aios.streams.kafka import EventProducer
from aios.streams.metrics import CONTROL_BROADCASTS
from aios.streams.pipeline import running
from aios.streams.processors.agent_control import BROADCAST_PROJECT, broadcast_event
from aios.streams.settings import Settings
from tests.integration.helpers import submit_and_wait, wait_until

pytestmark = pytest.mark.integration


def config(path: Path, server: FakeOpenAI) -> None:
    path.write_text(f'[[deployments]]\nmodel = "openai:gpt-4o-mini"\nbase_url = "{server.base_url}"\n')


def done(outcome: str) -> float:
    return float(CONTROL_BROADCASTS.labels("reload", outcome)._value.get())


async def reload(s: Settings, what: str | None, outcome: str = "done") -> None:
    before = done(outcome)
    producer = EventProducer(s)
    producer.send(s.kafka.topic_prefix + ".control", "Control", broadcast_event("reload", what, "test", "test"),
                  key=BROADCAST_PROJECT)
    producer.flush()
    await wait_until(lambda: done(outcome) > before, 30)


async def test_reload_llm_moves_calls_to_the_new_config_and_refuses_a_broken_one(settings: Settings,
                                                                                tmp_path: Path) -> None:
    path = tmp_path / "llm.toml"
    with FakeOpenAI() as first, FakeOpenAI() as second:
        first.script(ok("from the first"))
        second.script(ok("from the second"), ok("still the second"))
        config(path, first)
        s = settings.replace(llm_config=path, openai_api_key=SecretStr("sk-test"), llm_max_retries=0)
        async with running(s, ["orchestrator", "results", "agents"]):
            assert (await submit_and_wait(s, "one", timeout_s=60))["output"] == "from the first"
            config(path, second)
            await reload(s, "llm")
            assert (await submit_and_wait(s, "two", timeout_s=60))["output"] == "from the second"
            path.write_text("[[deployments]]\nmodel = 'nosuch:provider'\n")  # broken: refused
            await reload(s, "llm", "failed")
            assert (await submit_and_wait(s, "three", timeout_s=60))["output"] == "still the second"
        assert [len(first.requests), len(second.requests)] == [1, 2]


async def test_reload_roles_gives_the_next_task_the_new_persona(settings: Settings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = catalogue.packaged_json("aios.agents", "roles.json", "agents/roles.json")
    edited: dict[str, Any] = json.loads(json.dumps(shipped))
    edited["roles"]["general"]["persona"] = "You are the reloaded generalist."
    with FakeOpenAI() as server:
        s = settings.replace(llm="openai:gpt-4o-mini", openai_api_key=SecretStr("sk-test"),
                             openai_base_url=server.base_url, llm_max_retries=0)
        async with running(s, ["orchestrator", "results", "agents"]):
            await submit_and_wait(s, "before", timeout_s=60)
            # What a deploy that replaces roles.json does; the worker reads it only when told to.
            monkeypatch.setattr("aios.agents.roles.packaged_json", lambda *_: edited)
            await asyncio.sleep(0)
            await submit_and_wait(s, "still before", timeout_s=60)
            await reload(s, "roles")
            await submit_and_wait(s, "after", timeout_s=60)
    monkeypatch.undo()
    from aios.agents.roles import load_roles
    from aios.agents.runner import system_prompt
    load_roles.cache_clear()  # leave the shipped roles to the next test
    system_prompt.cache_clear()
    personas = [str(r.body["messages"][0]["content"]) for r in server.requests]
    assert ["You are the reloaded generalist." in p for p in personas] == [False, False, True]
