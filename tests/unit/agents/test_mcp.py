"""MCP tools as pure logic: the [mcp] section, the result the model reads, the definitions a server
may offer, and the journal that keeps a replayed attempt from calling a tool twice. The real servers
are in tests/integration/test_mcp_tools.py."""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

import mcp_types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.agents.llm.base import ToolSpec
from aios.agents.llm.configfile import parse_llm_file
from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers.openai import FakeOpenAI, ok, tool_call
from aios.agents.mcp.config import parse_mcp_section
from aios.agents.mcp.errors import McpResultTooLargeError, McpToolError
from aios.agents.mcp.tools import offerable, result_text
from aios.agents.runner import AgentTask, run_task, tool_journal_key
from aios.agents.tools import Toolbox, ToolContext
from aios.schemas.errors import ConfigError
from aios.schemas.sealed import KeyRing
from aios.streams.processors.agent_privacy import SealedJournal
from aios.streams.sealing import Sealer
from tests.unit.agents.test_tools import MemoryJournal

EXAMPLE = """
[[mcp.servers]]
name = "files"
transport = "http"
url = "https://mcp.example.com/mcp"
bearer_token_env = "FILES_MCP_TOKEN"
timeout_s = 10

[[mcp.servers]]
name = "calc"
transport = "stdio"
command = "python"
args = ["-m", "calc_server"]
env = { CALC_PRECISION = "6" }
max_result_chars = 2000

[mcp.roles]
backend = ["files.read_file", "calc.*"]
qa = ["calc.add"]
"""


def test_the_example_section_reads_and_allows_per_role() -> None:
    file = parse_llm_file(tomllib.loads(EXAMPLE), "aios.toml")
    assert file.deployments == () and file.mcp is not None
    files, calc = file.mcp.servers
    assert (files.transport, files.url, files.bearer_token_env, files.timeout_s) == (
        "http", "https://mcp.example.com/mcp", "FILES_MCP_TOKEN", 10.0)
    assert (calc.transport, calc.command, calc.args, dict(calc.env), calc.max_result_chars) == (
        "stdio", "python", ("-m", "calc_server"), {"CALC_PRECISION": "6"}, 2000)
    mcp = file.mcp
    assert mcp.allowed("backend", "files", "read_file") and not mcp.allowed("backend", "files", "write_file")
    assert mcp.allowed("backend", "calc", "anything") and mcp.allowed("qa", "calc", "add")
    assert not mcp.allowed("qa", "calc", "sub") and not mcp.allowed("general", "calc", "add")
    assert [s.name for s in mcp.servers_for(("qa",))] == ["calc"], "a worker connects only to its roles' servers"
    assert mcp.servers_for(("general",)) == ()


HTTP = {"name": "s", "transport": "http", "url": "http://h/mcp"}


@pytest.mark.parametrize(("section", "message"), [
    ([], r"\[mcp\] must be a table"),
    ({"server": []}, r"unknown key 'server'; the section has 'servers' and 'roles'"),
    ({"servers": []}, r"'servers' must be a non-empty list"),
    ({"servers": [{**HTTP, "name": "Bad Name"}]}, r"servers\[0\]: 'name' must be lowercase letters"),
    ({"servers": [{**HTTP, "transport": "sse"}]}, r"'transport' must be \"http\" \(Streamable HTTP\) or \"stdio\""),
    ({"servers": [{**HTTP, "url": "ftp://h"}]}, r"an http server needs 'url', an http:// or https:// URL"),
    ({"servers": [{**HTTP, "command": "x"}]}, r"'command' is not for a http server; it takes url, headers"),
    ({"servers": [{"name": "s", "transport": "stdio"}]}, r"a stdio server needs 'command'"),
    ({"servers": [{"name": "s", "transport": "stdio", "command": "x", "args": "-v"}]}, r"'args' must be a list"),
    ({"servers": [{**HTTP, "timeout_s": 0}]}, r"'timeout_s' must be a number of seconds"),
    ({"servers": [{**HTTP, "max_result_chars": 10**9}]}, r"'max_result_chars' must be a whole number in \[1, 8000\]"),
    ({"servers": [{**HTTP, "bearer_token_env": "not a var"}]}, r"'bearer_token_env' must name an environment variable"),
    ({"servers": [{**HTTP, "headers": {"X": 1}}]}, r"'headers' must be a table of strings"),
    ({"servers": [{**HTTP, "colour": "red"}]}, r"unknown key 'colour'; known: name, transport"),
    ({"servers": [HTTP, HTTP]}, r"servers\[1\] \(s\): the name 's' is taken by"),
    ({"servers": [HTTP], "roles": {"qa": ["other.*"]}}, r"mcp.roles.qa: 'other.\*' names no server"),
    ({"servers": [HTTP], "roles": {"qa": ["s"]}}, r"'s' is not \"server.tool\" or \"server.\*\""),
    ({"servers": [HTTP], "roles": {"QA": ["s.*"]}}, r"'QA' is not a role name"),
    ({"servers": [HTTP], "roles": {"qa": "s.*"}}, r"mcp.roles.qa must be a list"),
])
def test_every_mistake_names_the_file_the_entry_and_the_fix(section: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^f.toml.*" + message):
        parse_mcp_section(section, "f.toml")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=4), max_leaves=20)
server_like = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["s", "x y", "", 3]), "transport": st.sampled_from(["http", "stdio", "tcp", None]),
    "url": st.sampled_from(["http://h/mcp", "nope", 1]), "command": st.sampled_from(["x", "", []]),
    "args": json_values, "env": json_values, "headers": json_values, "timeout_s": json_values,
    "max_result_chars": json_values, "cwd": json_values})


@settings(max_examples=300)
@given(section=st.one_of(json_values, st.fixed_dictionaries(
    {"servers": st.lists(server_like | json_values, max_size=3)}, optional={"roles": json_values})))
def test_any_section_reads_or_says_what_to_fix(section: object) -> None:
    try:
        parse_mcp_section(section, "f.toml")
    except ConfigError as exc:
        assert str(exc).startswith("f.toml")


def text_result(*texts: str, error: bool = False, structured: dict[str, Any] | None = None) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=t) for t in texts],
                                    is_error=error, structured_content=structured)


def test_a_result_is_the_text_the_model_reads() -> None:
    assert result_text(text_result("a", "b"), server="s", tool="t", limit=10) == "a\nb"
    assert result_text(text_result(structured={"n": 1}), server="s", tool="t", limit=10) == '{"n": 1}'
    image = mcp_types.CallToolResult(content=[mcp_types.ImageContent(type="image", data="QUJD", mime_type="image/png")])
    assert result_text(image, server="s", tool="t", limit=100) == "[image image/png, 4 characters of base64 not shown]"
    with pytest.raises(McpToolError, match=r"^s.t failed: disk full$"):
        result_text(text_result("disk full", error=True), server="s", tool="t", limit=100)
    with pytest.raises(McpResultTooLargeError, match=r"^s.t returned 11 characters, over the 10"):
        result_text(text_result("x" * 11), server="s", tool="t", limit=10)


def test_only_definitions_every_vendor_takes_are_offered() -> None:
    good = {"name": "read_file", "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}}
    assert offerable("files", good)
    assert not offerable("files", {**good, "name": "read file"})
    assert not offerable("files", {**good, "name": "x" * 60}), "64 characters with the server's prefix"
    assert not offerable("files", {**good, "inputSchema": {"type": "array"}})
    assert not offerable("files", {**good, "inputSchema": {"type": "object", "properties": {"p": {"type": 7}}}})
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"p": deep}}
    assert not offerable("files", {**good, "inputSchema": deep})


@settings(max_examples=300)
@given(definition=st.dictionaries(st.sampled_from(["name", "inputSchema", "description"]), json_values)
       | st.fixed_dictionaries({"name": st.text(max_size=70), "inputSchema": st.fixed_dictionaries(
           {"type": st.just("object")}, optional={"properties": json_values, "required": json_values})}))
def test_a_hostile_server_s_definitions_are_offered_or_left_out_never_a_crash(definition: dict[str, Any]) -> None:
    if offerable("srv", definition):  # what is offered builds a toolbox the model can call
        spec = ToolSpec(f"srv__{definition['name']}", "d", definition["inputSchema"])
        Toolbox([_Counting(spec)])


class _Counting:
    """A tool that acts on the world: it counts its runs."""

    def __init__(self, spec: ToolSpec | None = None) -> None:
        self.spec = spec or ToolSpec("counter__record", "Record a note.", {"type": "object", "properties": {
            "note": {"type": "string"}}, "required": ["note"]})
        self.runs: list[Mapping[str, Any]] = []

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        self.runs.append(dict(arguments))
        return f"recorded: {arguments['note']}"


TASK = AgentTask("t-9", "p", "general", "Record the release note")


async def test_a_replay_never_runs_a_tool_again(fake_openai: FakeOpenAI,
                                                make_openai: Callable[..., OpenAIProvider]) -> None:
    fake_openai.script(tool_call("counter__record", note="v2"), ok("noted"))
    tool, journal = _Counting(), MemoryJournal()
    first = await run_task(make_openai(), TASK, tools=Toolbox([tool]), journal=journal)
    again = await run_task(make_openai(), TASK, tools=Toolbox([tool]), journal=journal)
    assert tool.runs == [{"note": "v2"}], "the replay read the tool's result back"
    assert len(fake_openai.requests) == 2
    assert [(r.result, r.replayed) for r in first.tools] == [("recorded: v2", False)]
    assert [(r.result, r.replayed) for r in again.tools] == [("recorded: v2", True)]
    assert journal.records[(tool_journal_key("p", "t-9", 0), 1, 0)] == {
        "text": "recorded: v2", "call": {"name": "counter__record", "arguments": {"note": "v2"}}}


async def test_a_recorded_result_of_another_call_is_not_reused(fake_openai: FakeOpenAI,
                                                               make_openai: Callable[..., OpenAIProvider]) -> None:
    # The LLM's answer expired from the journal and the model now asks something else at that step.
    fake_openai.script(tool_call("counter__record", note="new"), ok("noted"))
    tool, journal = _Counting(), MemoryJournal()
    journal.records[(tool_journal_key("p", "t-9", 0), 1, 0)] = {
        "text": "recorded: old", "call": {"name": "counter__record", "arguments": {"note": "old"}}}
    outcome = await run_task(make_openai(), TASK, tools=Toolbox([tool]), journal=journal)
    assert tool.runs == [{"note": "new"}] and outcome.tools[0].result == "recorded: new"


def test_a_tool_key_is_never_a_task_s_llm_key() -> None:
    # '#' is outside the id pattern, so no project/task pair can spell a tool call's key.
    assert tool_journal_key("p", "t", 0) == "p/t#tool0"


async def test_a_restricted_task_s_tool_call_is_sealed_in_the_journal() -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    inner = MemoryJournal()
    journal = SealedJournal(inner, Sealer(KeyRing.parse(f"k1:{key}")))
    record = {"text": "recorded: secret", "call": {"name": "counter__record", "arguments": {"note": "secret"}}}
    await journal.put("p/t#tool0", 1, 0, record)
    stored = json.dumps(inner.records[("p/t#tool0", 1, 0)])
    assert "secret" not in stored, "neither the arguments nor the result are in clear"
    opened = await journal.get("p/t#tool0", 1, 0)
    assert opened is not None and (opened["text"], opened["call"]) == (record["text"], record["call"])


blocks = st.one_of(
    st.builds(lambda t: mcp_types.TextContent(type="text", text=t), st.text(max_size=300)),
    st.builds(lambda d: mcp_types.ImageContent(type="image", data=d, mime_type="image/png"), st.text(max_size=50)),
    st.builds(lambda u: mcp_types.ResourceLink(type="resource_link", uri=f"file:///{u}", name="r"),
              st.text(alphabet="abc", max_size=10)))


@settings(max_examples=300)
@given(content=st.lists(blocks, max_size=6), error=st.booleans(),
       structured=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
       limit=st.integers(1, 8_000))
def test_any_result_is_text_within_the_limit_or_a_tool_error(content: list[Any], error: bool,
                                                            structured: dict[str, Any] | None, limit: int) -> None:
    result = mcp_types.CallToolResult(content=content, is_error=error, structured_content=structured)
    try:
        text = result_text(result, server="s", tool="t", limit=limit)
    except (McpToolError, McpResultTooLargeError) as exc:
        assert str(exc).startswith("s.t ")
    else:
        assert not error and len(text) <= limit
