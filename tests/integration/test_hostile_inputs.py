"""Hostile but schema-valid events on every input topic, through every real processor on the real
broker: none exits, every bad record is in the DLQ with a reason, no good one is, and a normal task
submitted afterwards still succeeds.

Hypothesis generates the records: for each field a value within the limits or, now and then, one
outside them (extreme numbers, huge, blank and deep strings and lists, unicode, ids with
separators and control characters), so each record is known good or bad from how it was drawn,
not from the checks under test. Besides them: deep and wide DAGs, plans with broken graphs, JSON
that is not a task, undecodable bytes, records of the wrong type for their topic, and a few fixed
extremes (a 10,000-task chain, a task waiting on 1,000 others, JSON nested 100,000 deep, a record
near the message size). The figures are printed (run with -s).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from aios.schemas.events import now_ms
from aios.schemas.limits import not_blank
from aios.streams.kafka import EventProducer, TopicReader, make_codec
from aios.streams.pipeline import running
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings
from aios.streams.topics import Topics, create_topics
from tests.integration.helpers import submit_and_wait, wait_until
from tests.unit.schemas import sample_value

pytestmark = pytest.mark.integration
CASES = int(os.environ.get("HOSTILE_CASES", "300"))  # more for a longer run: HOSTILE_CASES=2000
ROLES = ("general", "backend")


@dataclass
class Case:
    topic: str  # short name: tasks, projects, agent.general, tasks-json, ...
    record: str | None  # Avro record name, or None for raw bytes
    value: Any  # the event (a dict) or the raw bytes
    bad: bool
    kind: str  # what it is, for the report


# --- fields: within the limits, or outside them ---------------------------------------------------
ID = st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True)
BAD_ID = st.one_of(
    st.sampled_from(["", "a/b", "a b", "tab\there", "nul\x00", "new\nline", "é", "\u202eevil", "sep\x1fid", "x" * 129]),
    st.builds(lambda a, sep, b: a + sep + b, ID, st.sampled_from(["/", " ", "\x00", "\n", "\x1f", "ü", "\\"]), ID),
)
EVENT_ID = st.uuids().map(lambda u: u.hex)
BAD_EVENT_ID = st.sampled_from(["", "has space", "ééé", "x" * 129])
TEXT = st.text(min_size=1, max_size=300).filter(not_blank)
DESCRIPTION = st.one_of(TEXT, st.sampled_from(["x" * 20_000, "é" * 20_000, "😀" * 20_000, "\x00 nul inside", "\u00a0"]))
BAD_DESCRIPTION = st.sampled_from(["", "   ", "\t\n\r", "y" * 20_001])
PRIORITY = st.integers(-1000, 1000)
BAD_PRIORITY = st.one_of(st.integers(-(2**31), -1001), st.integers(1001, 2**31 - 1))
DEPENDS = st.one_of(st.lists(ID, max_size=4), st.just([f"dep{i}" for i in range(1000)]))
BAD_DEPENDS = st.one_of(st.lists(BAD_ID, min_size=1, max_size=3), st.just([f"d{i}" for i in range(1001)]))
ROLE = st.sampled_from([*ROLES, "astronaut"])  # a well-formed role this deployment lacks: a failed task
BAD_ROLE = st.sampled_from(["", "General", "a b", "r" * 41, "rôle", "-x"])
PRIVACY = st.sampled_from(["normal", "restricted", "typo"])  # anything but normal is restricted
NAME = st.text(max_size=60)
BAD_NAME = st.text(min_size=201, max_size=260)
METADATA = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)
BAD_METADATA = st.one_of(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=3), min_size=33, max_size=40),
                         st.just({"k": "v" * 2_001}))
MONEY = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
BAD_MONEY = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 1e300])


class Draw:
    """Draws each field within the limits or, one time in ``odds``, outside them; remembers which."""

    def __init__(self, draw: Any, odds: int = 12) -> None:
        self.draw, self.odds, self.bad = draw, odds, False

    def __call__(self, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] | None = None) -> Any:
        if bad is not None and self.draw(st.integers(0, self.odds - 1)) == 0:
            self.bad = True
            return self.draw(bad)
        return self.draw(good)


def envelope(f: Draw) -> dict[str, Any]:
    return {"event_id": f(EVENT_ID, BAD_EVENT_ID), "timestamp": now_ms(), "trace_id": f(EVENT_ID, BAD_EVENT_ID)}


@st.composite
def tasks(draw: Any) -> Case:
    f = Draw(draw)
    value = {**envelope(f), "task_id": f(ID, BAD_ID), "project_id": f(ID, BAD_ID), "role": f(ROLE, BAD_ROLE),
             "description": f(DESCRIPTION, BAD_DESCRIPTION), "priority": f(PRIORITY, BAD_PRIORITY),
             "depends_on": f(DEPENDS, BAD_DEPENDS), "privacy": f(PRIVACY, st.just("p" * 33)),
             "submitted_by": f(NAME, BAD_NAME), "metadata": f(METADATA, BAD_METADATA)}
    return Case("tasks", "Task", value, f.bad, "task")


def plan_task(task_id: str, depends_on: list[str], **fields: Any) -> dict[str, Any]:
    return {"task_id": task_id, "role": "general", "description": f"step {task_id}", "depends_on": depends_on,
            "priority": 0, "acceptance": "", "requires_approval": not depends_on, "privacy": "normal", **fields}


@st.composite
def plans(draw: Any) -> Case:
    f = Draw(draw)
    project = f"plan-{uuid.uuid4().hex[:12]}"  # unique: a second plan for a project is refused
    shape = draw(st.sampled_from(["small", "chain", "wide", "goal", "cycle", "unknown-dep", "duplicate",
                                  "self-dep", "too-many", "bad-task"]))
    if shape == "small":
        n = draw(st.integers(1, 5))
        tasks = [plan_task(f"t{i}", [f"t{i - 1}"] if i else [], priority=f(PRIORITY, BAD_PRIORITY),
                           description=f(DESCRIPTION, BAD_DESCRIPTION)) for i in range(n)]
    elif shape == "chain":  # listed last task first: the order that broke the recursive walks
        n = draw(st.sampled_from([100, 1_000]))
        tasks = [plan_task(f"c{i}", [f"c{i - 1}"] if i else []) for i in reversed(range(n))]
    elif shape == "wide":
        n = draw(st.integers(2, 1_000))
        tasks = [*(plan_task(f"r{i}", []) for i in range(n)), plan_task("sink", [f"r{i}" for i in range(n)])]
    elif shape == "goal":
        tasks = []  # a goal needs the planner role, which this deployment does not run
    elif shape == "cycle":
        tasks = [plan_task("a", ["b"]), plan_task("b", ["a"])]
    elif shape == "unknown-dep":
        tasks = [plan_task("a", ["ghost"])]
    elif shape == "duplicate":
        tasks = [plan_task("a", []), plan_task("a", [])]
    elif shape == "self-dep":
        tasks = [plan_task("a", ["a"])]
    elif shape == "too-many":
        tasks = [plan_task(f"m{i}", []) for i in range(10_001)]
    else:
        tasks = [{**plan_task("a", []), "task_id": draw(BAD_ID)}]
    value = {**envelope(f), "project_id": f(st.just(project), BAD_ID), "goal": "write a plan" if shape == "goal" else "",
             "tasks": tasks, "budget_usd": f(st.one_of(st.none(), MONEY), BAD_MONEY), "submitted_by": f(NAME, BAD_NAME)}
    bad = f.bad or shape in ("goal", "cycle", "unknown-dep", "duplicate", "self-dep", "too-many", "bad-task")
    return Case("projects", "ProjectPlan", value, bad, f"plan:{shape}")


@st.composite
def controls(draw: Any) -> Case:
    f = Draw(draw, odds=4)
    value = {**envelope(f), "project_id": f(ID, BAD_ID), "action": draw(st.sampled_from(
        ["cancel", "approve", "reject", "retry_due", "unknown"])), "task_id": f(st.one_of(st.none(), ID), BAD_ID),
        "reason": f(st.text(max_size=100), st.just("r" * 2_001)), "requested_by": f(NAME, BAD_NAME)}
    return Case("control", "Control", value, f.bad, "control")


def result_fields(f: Draw) -> dict[str, Any]:
    return {**envelope(f), "task_id": f(ID, BAD_ID), "project_id": f(ID, BAD_ID), "role": f(st.sampled_from(ROLES), BAD_ROLE),
            "attempt": f(st.integers(0, 10_000), st.sampled_from([-1, 10_001, 2**31 - 1])),
            "status": f.draw(st.sampled_from(["succeeded", "failed", "skipped", "cancelled"])),
            "output": f(st.one_of(st.text(max_size=200), st.just("ü" * 100_000)), st.just("o" * 300_000)),
            "error": f(st.one_of(st.none(), st.text(max_size=100)), st.just("e" * 4_001)),
            "error_type": f(st.one_of(st.none(), st.sampled_from(["ProviderError", "invalid_output"])), None),
            "agent_id": f(NAME, BAD_NAME), "provider": f(NAME, BAD_NAME), "model": f(NAME, BAD_NAME),
            "input_tokens": f(st.integers(0, 2**31 - 1), st.integers(-(2**31), -1)),
            "output_tokens": f(st.integers(0, 10**6), st.just(-5)),
            "cost_usd": f(MONEY, BAD_MONEY), "latency_ms": f(MONEY, BAD_MONEY), "submitted_at": now_ms(),
            "recall": f(st.lists(ID, max_size=3), st.just([f"m{i}" for i in range(101)]))}


@st.composite
def attempts(draw: Any) -> Case:
    f = Draw(draw)
    return Case("attempts", "TaskResult", result_fields(f), f.bad, "attempt")


@st.composite
def results(draw: Any) -> Case:
    f = Draw(draw)
    return Case("results", "TaskResult", result_fields(f), f.bad, "result")


@st.composite
def assignments(draw: Any) -> Case:
    f = Draw(draw)
    role = draw(st.sampled_from(ROLES))
    value = {**envelope(f), "task_id": f(ID, BAD_ID), "project_id": f(ID, BAD_ID),
             # A role or strategy this worker does not know makes the handler raise: its own fault.
             "role": f(st.just(role), st.sampled_from(["astronaut", "Bad Role"])),
             "description": f(DESCRIPTION, BAD_DESCRIPTION), "attempt": f(st.integers(1, 10_000), st.sampled_from([0, -5])),
             "priority": f(PRIORITY, BAD_PRIORITY), "privacy": f(PRIVACY, st.just("p" * 33)),
             "strategy": f(st.one_of(st.none(), st.sampled_from(["cost", "latency"])), st.just("bogus")),
             "context": f(st.dictionaries(ID, st.text(max_size=50), max_size=3),
                          st.one_of(st.dictionaries(BAD_ID, st.text(max_size=5), min_size=1, max_size=2),
                                    st.just({f"c{i}": "" for i in range(1_001)}))),
             "submitted_at": now_ms()}
    return Case(f"agent.{role}", "Assignment", value, f.bad, "assignment")


@st.composite
def memories(draw: Any) -> Case:
    f = Draw(draw)
    scope_id = f(ID, BAD_ID)
    value = {**envelope(f), "memory_id": f(ID.map(lambda i: f"{i}:1:turn"), st.sampled_from(["has space", "é:1", ""])),
             "scope": draw(st.sampled_from(["session", "project", "agent", "task"])), "scope_id": scope_id,
             "project_id": f(ID, BAD_ID), "kind": draw(st.sampled_from(["turn", "fact"])), "speaker": f(NAME, BAD_NAME),
             "content": f(st.one_of(st.text(max_size=300), st.just("ß" * 100_000)), st.just("c" * 600_000)),
             "task_id": f(st.one_of(st.none(), ID), BAD_ID), "tokens": f(st.integers(0, 10**6), st.just(-1))}
    return Case("memory", "MemoryEvent", value, f.bad, "memory")


JSON_GOOD = st.fixed_dictionaries({"description": TEXT}, optional={
    "role": st.sampled_from(ROLES), "priority": PRIORITY, "project": ID, "task_id": ID,
    "privacy": st.sampled_from(["normal", "restricted"]), "metadata": METADATA, "depends_on": st.lists(ID, max_size=2)})
JSON_BAD = st.one_of(
    st.fixed_dictionaries({"description": TEXT, "priority": st.one_of(BAD_PRIORITY, st.booleans(),
                                                                      st.floats(0.5, 9.5).filter(lambda x: not x.is_integer()),
                                                                      st.text(max_size=5))}),
    st.fixed_dictionaries({"description": BAD_DESCRIPTION}),
    st.fixed_dictionaries({"description": TEXT, "task_id": BAD_ID}),
    st.fixed_dictionaries({"description": TEXT, "role": st.sampled_from(["astronaut", "Bad"])}),
    st.fixed_dictionaries({"description": TEXT, "colour": st.text(max_size=5)}),
    st.fixed_dictionaries({"description": TEXT, "depends_on": st.one_of(st.text(max_size=5), st.lists(BAD_ID, min_size=1, max_size=2))}),
    st.fixed_dictionaries({"description": TEXT, "trace_id": st.sampled_from(["with space", "é"])}),
    st.lists(st.integers(), max_size=3), st.text(max_size=20), st.none(), st.integers(),
)


@st.composite
def json_tasks(draw: Any) -> Case:
    if draw(st.integers(0, 2)) == 0:
        return Case("tasks-json", None, json.dumps(draw(JSON_GOOD)).encode(), False, "json")
    junk = draw(st.one_of(JSON_BAD.map(lambda d: json.dumps(d).encode()), st.binary(max_size=40).filter(
        lambda b: not b.strip().startswith(b"{"))))
    return Case("tasks-json", None, junk, True, "json:bad")


AVRO_TOPICS = ["tasks", "projects", "control", "attempts", "agent.general", "agent.backend", "memory", "results",
               "messages", "llm-calls"]


@st.composite
def undecodable(draw: Any) -> Case:
    topic = draw(st.sampled_from(AVRO_TOPICS))
    junk = draw(st.one_of(st.binary(max_size=64), st.none()))
    return Case(topic, None, junk, True, "undecodable")


# A record of the wrong type for its topic: decodes, but not as what the topic carries.
WRONG_TYPE = {"tasks": "MemoryEvent", "projects": "Task", "control": "Task", "attempts": "Assignment",
              "agent.general": "TaskResult", "agent.backend": "Task", "memory": "LlmCall", "results": "Task"}


def any_case() -> st.SearchStrategy[Case]:
    return st.one_of(tasks(), tasks(), plans(), controls(), attempts(), results(), assignments(), memories(),
                     json_tasks(), json_tasks(), undecodable())


def fixed_extremes(codec: Any) -> list[Case]:
    """Cases no draw should be left to: the largest shapes the limits allow, and just past them."""
    project = f"deep-{uuid.uuid4().hex[:8]}"
    chain = [plan_task(f"s{i}", [f"s{i - 1}"] if i else []) for i in reversed(range(10_000))]
    plan = {"event_id": uuid.uuid4().hex, "timestamp": now_ms(), "trace_id": uuid.uuid4().hex, "project_id": project,
            "goal": "", "tasks": chain, "budget_usd": None, "submitted_by": "hostile"}
    task = {"event_id": uuid.uuid4().hex, "timestamp": now_ms(), "trace_id": uuid.uuid4().hex, "task_id": "t",
            "project_id": "huge", "role": "general", "description": "d", "priority": 0, "depends_on": [],
            "privacy": "normal", "submitted_by": "hostile", "metadata": {}}
    out = [
        Case("projects", "ProjectPlan", plan, False, "plan:chain-10000"),
        Case("tasks", "Task", {**task, "task_id": "huge", "description": "z" * 900_000}, True, "task:900kB"),
        Case("tasks-json", None, b"[" * 100_000 + b"]" * 100_000, True, "json:deep"),
        Case("tasks-json", None, b'{"description": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001, True, "json:deep"),
    ]
    # A valid record with its body cut short, and records of another type, on every Avro topic.
    sample = codec.encode("Task", task, None)
    for topic, record in WRONG_TYPE.items():
        out.append(Case(topic, None, sample[: len(sample) // 2], True, "truncated"))
        out.append(Case(topic, record, sample_value(record), True, "wrong-type"))
    # A null value (a tombstone) on every topic that is not compacted: drawn only now and then above,
    # and once it was the one record no processor dead-lettered (on results).
    out += [Case(topic, None, None, True, "undecodable") for topic in AVRO_TOPICS]
    return out


def generate(codec: Any) -> list[Case]:
    drawn: list[Case] = []

    @given(case=any_case())
    @hsettings(max_examples=CASES, database=None, deadline=None, phases=[Phase.generate],
               suppress_health_check=list(HealthCheck))
    def collect(case: Case) -> None:
        drawn.append(case)

    collect()
    return drawn + fixed_extremes(codec)


def produce(settings: Settings, cases: list[Case]) -> dict[tuple[str, int, int], Case]:
    """Every case onto its topic; returns each case by where it landed."""
    prefix = settings.kafka.topic_prefix
    producer = EventProducer(settings)
    codec = make_codec(settings, validate=True)  # schema-valid, whatever else they are
    placed: dict[tuple[str, int, int], Case] = {}
    for case in cases:
        topic = f"{prefix}.{case.topic}"
        data = codec.encode(case.record, case.value, topic) if case.record else case.value
        before = len(producer.delivered)
        project = case.value.get("project_id") if isinstance(case.value, dict) else None
        # Keyed as producers key them (the orchestrator's inputs by project), when there is a key.
        producer.send_raw(topic, data, key=project if isinstance(project, str) and project else uuid.uuid4().hex)
        producer.flush()
        placed[producer.delivered[before]] = case
    return placed


def letters(settings: Settings) -> list[dict[str, Any]]:
    reader = TopicReader(settings, Topics.from_settings(settings).dlq, from_beginning=True)
    try:
        return [d.value for _, d in reader.events(timeout_s=2) if not isinstance(d, Exception)]
    finally:
        reader.close()


async def test_hostile_events_on_every_input_topic_stop_no_processor(settings: Settings) -> None:
    s = settings.replace(roles=ROLES)
    create_topics(s)  # the backend role's topic
    cases = generate(make_codec(s))
    async with running(s, list(PROCESSORS)) as live:
        placed = await asyncio.to_thread(produce, s, cases)
        bad = {where for where, case in placed.items() if case.bad}

        def all_lettered() -> list[dict[str, Any]] | None:
            live.check()  # a crashed processor fails the test at once, naming itself
            got = letters(s)
            return got if bad <= {(d["source_topic"], d["source_partition"], d["source_offset"]) for d in got} else None

        try:
            dead = await wait_until(all_lettered, 180, every_s=3)  # well within the test timeout, so this says what is missing
        except AssertionError:
            lettered = {(d["source_topic"], d["source_partition"], d["source_offset"]) for d in letters(s)}
            missing = [placed[w] for w in sorted(bad - lettered)]
            raise AssertionError(f"{len(missing)} bad records not dead-lettered, e.g. "
                                 f"{[(c.kind, c.topic, str(c.value)[:300]) for c in missing[:5]]}") from None
        await asyncio.sleep(3)  # time for a good record to be wrongly lettered, too
        dead = letters(s)
        wrongly = [placed[w] for d in dead if (w := (d["source_topic"], d["source_partition"], d["source_offset"]))
                   in placed and not placed[w].bad]
        assert not wrongly, [(c.kind, c.topic, str(c.value)[:300]) for c in wrongly[:5]]
        assert all(d["error"] and d["processor"] and d["error_type"] for d in dead)
        result = await submit_and_wait(s, "a normal task after the storm", timeout_s=120)
        assert result["status"] == "succeeded"
        live.check()
    kinds = Counter(c.kind.split(":")[0] for c in cases)
    by_processor = Counter(d["processor"] for d in dead)
    print(f"\nhostile inputs: {len(cases)} cases ({CASES} drawn by hypothesis), {dict(kinds)}; "
          f"{len(bad)} bad, {len(dead)} dead-lettered {dict(by_processor)}; processes exited: 0")
