"""docs/settings.md and docs/cli.md list exactly the real settings and commands, and the README's
layout table and diagram match the packages and topics.

The two reference pages are generated from the code; when a setting or command changes, rewrite
them with ``python -m tests.unit.test_reference_docs``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from pydantic_core import PydanticUndefined

from aios.cli import cli
from aios.streams.processors import PROCESSORS
from aios.streams.settings import GROUPS, env_name, env_names, load_settings
from aios.streams.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MD = ROOT / "docs" / "settings.md"
CLI_MD = ROOT / "docs" / "cli.md"
README = ROOT / "README.md"


def _default(info: object) -> str:
    default = getattr(info, "default", PydanticUndefined)
    if default is PydanticUndefined:
        factory = getattr(info, "default_factory", None)
        default = factory() if callable(factory) else None
    if default is None or default == () or default == {}:
        return "unset" if default is None else "empty"
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def settings_page() -> str:
    lines = ["# Settings", "",
             "Every setting is an environment variable, read once at start-up by `streams/settings.py`. They come "
             "in groups, one frozen model each, passed to the layer that needs it. This page is generated from the "
             "code (`python -m tests.unit.test_reference_docs`), and a test keeps it exact.", ""]
    for name, group in GROUPS.items():
        lines += [f"## {name}", "", (group.__doc__ or "").strip(), "", "| variable | default | meaning |",
                  "|---|---|---|"]
        for field, info in group.model_fields.items():
            meaning = (info.description or "").replace("|", "\\|").replace("\n", " ")
            default = _default(info).replace("|", "\\|")
            lines.append(f"| `{env_name(group, field)}` | `{default}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name in group.list_commands(click.Context(group)):  # sorted; the top group imports each on demand
        command = group.get_command(click.Context(group), name)
        assert command is not None, f"{prefix} {name} is listed but does not load"
        path = f"{prefix} {name}"
        out.append((path, command))
        if isinstance(command, click.Group):
            out += _commands(command, path)
    return out


def cli_page() -> str:
    lines = ["# The `aios` command", "",
             "Every command that prints data also takes `--json`, which prints one JSON document as the last line. "
             "This page is generated from the code (`python -m tests.unit.test_reference_docs`), and a test keeps "
             "it exact.", ""]
    for path, command in _commands(cli, "aios"):
        ctx = click.Context(command, info_name=path)
        lines += [f"## `{path}`", "", "```", command.get_usage(ctx).strip(), "```", "",
                  (command.help or "").strip().split("\b")[0].strip(), ""]
        params = [p for p in command.params if isinstance(p, click.Option)]
        if params:
            lines += ["| option | meaning |", "|---|---|"]
            for p in params:
                names = ", ".join(f"`{o}`" for o in p.opts)
                meaning = (p.help or "").replace("|", "\\|")
                lines.append(f"| {names} | {meaning} |")
            lines.append("")
    return "\n".join(lines)


def test_the_settings_page_is_exact() -> None:
    assert SETTINGS_MD.read_text() == settings_page(), "run: python -m tests.unit.test_reference_docs"
    documented = set(re.findall(r"^\| `(AIOS_[A-Z0-9_]+)`", SETTINGS_MD.read_text(), re.M))
    assert documented == {n for n in env_names() if n.startswith("AIOS_")}


def test_the_cli_page_is_exact() -> None:
    assert CLI_MD.read_text() == cli_page(), "run: python -m tests.unit.test_reference_docs"


def test_every_setting_has_a_description() -> None:
    missing = [env_name(g, f) for g in GROUPS.values() for f, info in g.model_fields.items() if not info.description]
    assert not missing, f"describe these settings: {missing}"


def test_the_readme_layout_table_names_the_real_folders() -> None:
    text = README.read_text()
    table = re.findall(r"^\| `([a-z_/]+)/` \|", text, re.M)
    expected = {"schemas", "connectors", "agents", "streams", "api", "aios", "infra", "tests", "docs"}
    assert set(table) == expected
    for folder in table:
        assert (ROOT / folder).is_dir(), folder


def test_the_readme_diagram_names_real_topics_and_processors() -> None:
    text = README.read_text()
    diagram = text.split("```text", 1)[1].split("```", 1)[0]
    topics = Topics("aios", ("general",))
    known = {*topics.all(), topics.tasks_json, topics.results_json, topics.orchestrator_state, topics.role("<role>"),
             topics.tokens}
    named = set(re.findall(r"\baios\.[a-z<>.-]+[a-z>]", diagram))
    assert named <= known, f"the diagram names topics that do not exist: {named - known}"
    for processor in ("orchestrator", "results committer", "agent worker", "memory processor", "history sink"):
        assert processor in diagram
    assert {"orchestrator", "results", "agents", "memory", "history"} <= set(PROCESSORS)


def test_load_settings_routes_flat_names() -> None:
    s = load_settings(topic_prefix="x", llm="offline:echo", api_port=0)
    assert (s.kafka.topic_prefix, s.llm.spec, s.api.port) == ("x", "offline:echo", 0)


if __name__ == "__main__":
    SETTINGS_MD.write_text(settings_page())
    CLI_MD.write_text(cli_page())
    sys.stdout.write(f"wrote {SETTINGS_MD} and {CLI_MD}\n")
