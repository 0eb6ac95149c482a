"""The Dockerfile against what the wheels are built from: its COPY lines, replayed on the build
context less .dockerignore, must bring in every module, data file and crate file (no Docker engine
runs here; tests/e2e/test_install.py builds the wheels from the same replayed context)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.dockerfile_context import (
    ROOT,
    dockerignore_patterns,
    ignored,
    missing_inputs,
    parse_dockerfile,
    stage,
    wheel_inputs,
)

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_every_wheel_and_crate_input_reaches_its_build_stage(tmp_path: Path) -> None:
    assert missing_inputs(ROOT, DOCKERFILE, tmp_path) == {"build": [], "transcoder": []}


def test_the_inputs_cover_every_layer_and_the_data_files() -> None:
    inputs = set(wheel_inputs(ROOT))
    for layer in ("schemas", "connectors", "agents", "streams", "api", "cli", "bench", "devstack"):
        assert f"aios/{layer}/__init__.py" in inputs
    assert {"aios/agents/roles.json", "aios/agents/llm/models.json", "aios/api/static/index.html",
            "aios/schemas/avro/Task.avsc", "aios/connectors/history/migrations.py", "README.md"} <= inputs


@pytest.mark.parametrize("dropped", ["COPY api ./api\n", "COPY streams ./streams\n", "COPY aios ./aios\n"])
def test_a_package_folder_left_out_of_the_copy_lines_is_caught(tmp_path: Path, dropped: str) -> None:
    assert dropped in DOCKERFILE
    missing = missing_inputs(ROOT, DOCKERFILE.replace(dropped, ""), tmp_path)["build"]
    folder = dropped.split()[1]
    assert ("aios/__init__.py" if folder == "aios" else f"aios/{folder}/__init__.py") in missing


@pytest.mark.parametrize(("pattern", "lost"), [
    ("api/static", "aios/api/static/index.html"),
    ("**/*.json", "aios/agents/roles.json"),
    ("agents/llm/models.json", "aios/agents/llm/models.json"),
    ("schemas/avro/*.avsc", "aios/schemas/avro/Task.avsc"),
    ("connectors/history/transcoder/src", "connectors/history/transcoder/src/lib.rs"),
])
def test_a_data_file_left_out_by_dockerignore_is_caught(tmp_path: Path, pattern: str, lost: str) -> None:
    missing = missing_inputs(ROOT, DOCKERFILE, tmp_path, ignore=[*dockerignore_patterns(ROOT), pattern])
    assert lost in missing["build"] + missing["transcoder"]


def test_the_extras_the_image_installs_exist() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    runs = [run for s in parse_dockerfile(DOCKERFILE) for run in s.runs if "pip" in run]
    asked = {extra.strip() for run in runs for group in re.findall(r"\[([a-z0-9,_-]+)\]", run)
             for extra in group.split(",")}
    assert asked and asked <= extras, asked - extras  # pip only warns about an unknown extra


def test_the_runtime_installs_the_wheel_the_transcoder_stage_builds() -> None:
    crate = tomllib.loads((ROOT / "connectors/history/transcoder/pyproject.toml").read_text())["project"]["name"]
    stages = parse_dockerfile(DOCKERFILE)
    assert any("maturin build" in run and "--locked" in run for run in stage(stages, "transcoder").runs)
    assert any(crate in run for run in stages[-1].runs), f"the runtime stage does not install {crate}"


@pytest.mark.parametrize(("path", "patterns", "verdict"), [
    ("agents/__pycache__/x.pyc", ["**/__pycache__"], True),
    ("a/b/c.pyc", ["**/*.pyc"], True),
    ("tests/unit/x.py", ["tests"], True),
    ("connectors/history/transcoder/target/release/lib.so", ["connectors/history/transcoder/target"], True),
    ("connectors/history/transcoder/src/lib.rs", ["connectors/history/transcoder/target"], False),
    ("docs/a.md", ["docs", "!docs/a.md"], False),
    ("streams/kafka.py", ["*.py"], False),  # * does not cross folders
])
def test_dockerignore_matching(path: str, patterns: list[str], verdict: bool) -> None:
    assert ignored(path, patterns) is verdict


@given(st.text(alphabet="ab/*?!.", max_size=30), st.lists(st.text(alphabet="ab/*?!.", max_size=12), max_size=4))
def test_dockerignore_matching_takes_any_pattern(path: str, patterns: list[str]) -> None:
    assert ignored(path, patterns) in (True, False)
