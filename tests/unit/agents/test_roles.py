"""The role registry as data, output contracts, and the runner's validate-retry-fail loop."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.agents.llm.base import ChatRequest
from aios.agents.llm.offline import OFFLINE_LABEL, OfflineProvider
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers.openai import FakeOpenAI, ok
from aios.agents.roles import RoleRegistry, UnknownRoleError, load_roles
from aios.agents.runner import INVALID_OUTPUT, AgentTask, build_request, run_task
from aios.schemas.errors import ConfigError
from aios.streams.orchestration.state import PERMANENT_ERRORS
from aios.streams.settings import load_settings

SPECIALISTS = ("planner", "architect", "backend", "frontend", "qa", "reviewer", "writer")
GOOD_QA = json.dumps({"summary": "two cases", "test_cases": [{"name": "empty cart", "expected": "400"}]})


def qa_task(**kw: object) -> AgentTask:
    return AgentTask("t-qa", "p", "qa", "Plan the tests of the cart", **kw)  # type: ignore[arg-type]


def test_every_specialist_has_persona_capabilities_tier_and_a_contract() -> None:
    registry = load_roles()
    for name in SPECIALISTS:
        role = registry.get(name)
        assert role.persona and role.capabilities and role.tier in ("small", "medium", "large")
        assert role.contract is not None and role.contract["type"] == "object"
        assert "JSON Schema" in role.system_prompt() and name in role.system_prompt()
    assert registry.get("general").contract is None  # the free-text default role


def test_unknown_roles_and_bad_entries_are_clear_errors() -> None:
    with pytest.raises(UnknownRoleError, match="unknown role 'astronaut'.*planner"):
        load_roles().get("astronaut")
    entry = {"persona": "p", "capabilities": ["x"], "tier": "small", "contract": None}
    with pytest.raises(ConfigError, match="tier"):
        RoleRegistry.from_dict({"version": 1, "roles": {"x": {**entry, "tier": "huge"}}})
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        RoleRegistry.from_dict({"version": 1, "roles": {"x": {**entry, "contract": {"type": "nope"}}}})
    with pytest.raises(ConfigError, match="strategy"):
        RoleRegistry.from_dict({"version": 1, "roles": {"x": {**entry, "strategy": "fastest"}}})


def test_settings_accept_registry_roles_and_reject_unknown_ones() -> None:
    assert load_settings(roles="planner,backend,qa").processing.roles == ("planner", "backend", "qa")
    with pytest.raises(ConfigError, match="unknown role 'astronaut'.*known roles"):
        load_settings(roles="general,astronaut")


def test_validation_accepts_fenced_json_and_names_what_is_wrong() -> None:
    qa = load_roles().get("qa")
    out, problem = qa.validate(f"```json\n{GOOD_QA}\n```")
    assert problem is None and json.loads(out)["test_cases"][0]["name"] == "empty cart"
    _, problem = qa.validate('{"summary": "x", "test_cases": []}')
    assert problem is not None and "test_cases" in problem
    _, problem = qa.validate("not json")
    assert problem is not None and "not JSON" in problem


@pytest.mark.parametrize("role", SPECIALISTS)
async def test_offline_answers_meet_every_contract_and_stay_labelled(role: str) -> None:
    outcome = await run_task(OfflineProvider(), AgentTask("t", "p", role, "Build a URL shortener"))
    assert outcome.ok, outcome.error
    value = json.loads(outcome.output)
    assert value["summary"].startswith(OFFLINE_LABEL)
    assert load_roles().get(role).validate(outcome.output)[1] is None


def test_the_request_asks_for_structured_output() -> None:
    request: ChatRequest = build_request(qa_task())
    assert request.response_schema is not None and "test_cases" in request.response_schema["properties"]
    assert build_request(AgentTask("t", "p", "general", "x")).response_schema is None


async def test_invalid_output_is_retried_once_with_the_error(
    fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    fake_openai.script(ok("here are some tests"), ok(GOOD_QA))
    outcome = await run_task(make_openai(), qa_task())
    assert outcome.ok and json.loads(outcome.output)["summary"] == "two cases"
    assert [c.step for c in outcome.calls] == [0, 1]
    retry = fake_openai.requests[1].body["messages"]
    assert retry[-2] == {"role": "assistant", "content": "here are some tests"}
    assert "not JSON" in retry[-1]["content"]
    assert outcome.cost_usd == pytest.approx(sum(c.cost_usd for c in outcome.calls))


async def test_twice_invalid_output_fails_the_task_permanently(
    fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    fake_openai.script(ok("nope"), ok('{"summary": "still no cases"}'))
    outcome = await run_task(make_openai(), qa_task())
    assert not outcome.ok and outcome.error_type == INVALID_OUTPUT
    assert outcome.error is not None and "test_cases" in outcome.error
    assert len(fake_openai.requests) == 2, "retried once, not more"
    assert INVALID_OUTPUT in PERMANENT_ERRORS


def nested(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


def test_deep_answers_break_the_contract_with_a_reason_not_a_recursion_error() -> None:
    qa = load_roles().get("qa")
    for text in (nested(100_000), "{" + '"a": {' * 100_000, GOOD_QA[:-1] + ', "extra": ' + nested(100_000) + "}"):
        _, problem = qa.validate(text)
        assert problem is not None and "nested deeper than 64 levels" in problem
    # Within the limit, a deep value is checked by the schema like any other.
    out, problem = qa.validate(GOOD_QA[:-1] + ', "extra": ' + nested(60) + "}")
    assert problem is None and json.loads(out)["extra"] == json.loads(nested(60))
    _, problem = qa.validate(json.dumps({"summary": json.loads(nested(60)), "test_cases": [{"name": "n", "expected": "e"}]}))
    assert problem is not None and "summary" in problem


@settings(max_examples=100, deadline=None)
@given(depth=st.integers(0, 3000), wide=st.integers(0, 500), where=st.sampled_from(["summary", "test_cases", "extra"]),
       array=st.booleans())
def test_any_deep_or_wide_value_in_an_answer_is_a_verdict(depth: int, wide: int, where: str, array: bool) -> None:
    leaf = json.dumps([{"name": "n", "expected": "e"}] * wide)
    value = nested(depth, leaf) if array else '{"k":' * depth + leaf + "}" * depth
    text = json.dumps({"summary": "s", "test_cases": [{"name": "n", "expected": "e"}]} | {where: "@RAW@"})
    _, problem = load_roles().get("qa").validate(text.replace('"@RAW@"', value))
    if depth + 2 > 64:  # the answer object, the value's own list, then ``depth`` levels
        assert problem is not None and "nested deeper than 64 levels" in problem


async def test_a_model_answer_100_000_levels_deep_fails_the_attempt_with_the_reason(
    fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]
) -> None:
    # No spaces: the fake streams one delta per word.
    fake_openai.script(ok(nested(100_000)), ok('{"a":' * 100_000))
    outcome = await run_task(make_openai(), qa_task())
    assert not outcome.ok and outcome.error_type == INVALID_OUTPUT
    assert outcome.error is not None and "nested deeper than 64 levels" in outcome.error
    assert "nested deeper than 64 levels" in fake_openai.requests[1].body["messages"][-1]["content"]
