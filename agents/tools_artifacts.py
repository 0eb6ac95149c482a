"""The write_artifact tool: an agent keeps a file it produced (code, a document, a test report) in the
artifact store, and its result references it by name, size, sha256 and URI.

The tool only names the file and hands its content to the worker's ``SaveArtifact``; where the file
goes (which store, under which attempt) is the worker's business. A bad name or a file over the
size limit is answered with an error the model can act on; a store that does not answer is not
the model's mistake, so that error propagates and the attempt runs again (the LLM journal answers
the calls already made, and the same bytes go to the same key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aios.agents.llm.base import ToolSpec
from aios.agents.tools import ReadDependencyOutput, SearchMemory, Toolbox, ToolContext
from aios.schemas.artifacts import MAX_ARTIFACT_NAME_CHARS
from aios.schemas.errors import AiosError, UnavailableError


class WriteArtifact:
    """Store a file the task produced; the result will list it."""

    spec = ToolSpec(
        "write_artifact",
        "Save a file this task produced (source code, a document, a test report) to the artifact store; "
        "the task's result will reference it. Name it like a relative path, e.g. 'src/main.py' or "
        "'report.md'. Writing the same name again replaces the file.",
        {"type": "object", "required": ["name", "content"], "additionalProperties": False,
         "properties": {
             "name": {"type": "string", "minLength": 1, "maxLength": MAX_ARTIFACT_NAME_CHARS,
                      "pattern": r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
                      "description": "The file's name: parts of A-Z a-z 0-9 . _ - joined by '/'."},
             "content": {"type": "string", "description": "The whole content of the file, as text."}}},
    )

    async def run(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        if ctx.save is None:
            return "error: this task cannot write artifacts (restricted tasks keep nothing outside Kafka)"
        try:
            ref = await ctx.save(str(arguments["name"]), str(arguments["content"]))
        except UnavailableError:
            raise  # the store's outage, not the model's mistake: the attempt runs again
        except AiosError as exc:
            return f"error: {exc}"
        return f"saved {ref.name}: {ref.size} bytes, sha256 {ref.sha256}, at {ref.uri}"


def artifact_tools() -> Toolbox:
    """The read-only tools and write_artifact: what an agent that may write files gets."""
    return Toolbox([ReadDependencyOutput(), SearchMemory(), WriteArtifact()])

