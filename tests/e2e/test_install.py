"""AIOS as a user installs it: the wheel alone, no extras, in a fresh venv beside OpenAI's Agents SDK.

This is what the image holds (the Dockerfile builds the same wheel), and it proves three things:
the wheel carries every package and data file (a folder left out fails here), everything installs
under the one ``aios`` namespace (so ``import agents`` is still OpenAI's), and a base install without
the ``vector`` extra runs the pipeline with vector memory off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aios.streams.settings import Settings
from aios.streams.topics import delete_topics
from tests.e2e.conftest import free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Where the card's folders live in the repository; each is installed as aios.<name>.
LAYERS = ("schemas", "connectors", "agents", "streams", "api")
DATA_FILES = ("aios/schemas/avro/Task.avsc", "aios/agents/roles.json", "aios/agents/llm/models.json",
              "aios/api/static/index.html", "aios/py.typed")


def _run(*args: str | Path, timeout: float = 1200, env: dict[str, str] | None = None) -> str:
    # Away from the checkout: from its root, `import agents` would find the repository's folder.
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=Path(args[0]).parent if Path(str(args[0])).is_absolute() else None)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, ROOT)
    return next(out.glob("aios-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel (no extras) and the OpenAI Agents SDK, whose import name is `agents`."""
    path = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", path)
    _run(path / "bin" / "python", "-m", "pip", "install", "-q", wheel, "openai-agents")
    return path


def test_the_wheel_holds_every_package_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for layer in LAYERS:
        for source in (ROOT / layer).rglob("*.py"):
            if "transcoder" in source.parts:
                continue  # a Rust crate, built into its own wheel
            assert f"aios/{source.relative_to(ROOT)}" in names, f"{source} is missing from the wheel"
    for room in ("cli", "bench", "devstack"):
        for source in (ROOT / "aios" / room).rglob("*.py"):
            assert str(source.relative_to(ROOT)) in names, f"{source} is missing from the wheel"
    assert set(DATA_FILES) <= names
    assert not {n.split("/")[0] for n in names if not n.startswith("aios")} - {"aios-0.1.0.dist-info"}, (
        "only the aios namespace may be installed at the top level")


def test_aios_installs_beside_the_openai_agents_sdk(venv: Path) -> None:
    code = ("import agents, aios.agents, aios.agents.llm.router, aios.streams.pipeline, aios.api.app, aios.cli; "
            "print(agents.__file__); print(aios.agents.__file__); print(hasattr(agents, 'Runner'))")
    openai_agents, ours, has_runner = _run(venv / "bin" / "python", "-c", code).split()
    assert "site-packages/agents/" in openai_agents
    assert "site-packages/aios/agents/" in ours
    assert has_runner == "True"  # OpenAI's SDK, not ours, answers to `import agents`


def test_every_command_answers_help(venv: Path) -> None:
    aios = venv / "bin" / "aios"
    top = _run(aios, "--help")
    commands = [line.split()[0] for line in top.split("Commands:")[1].splitlines() if line.strip()]
    assert {"up", "worker", "submit", "status", "stats", "dev", "topics", "api", "bench"} <= set(commands)
    for command in commands:
        _run(aios, command, "--help")


def test_a_base_install_runs_the_pipeline_with_vector_memory_off(venv: Path, base_settings: Settings,
                                                                  tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_", "VIRTUAL_ENV"))}
    env.update({"AIOS_TOPIC_PREFIX": f"inst{uuid.uuid4().hex[:10]}", "AIOS_DATA_DIR": str(tmp_path / "data"),
                "AIOS_KAFKA_BOOTSTRAP": base_settings.kafka.bootstrap, "AIOS_REDIS_URL": base_settings.stores.redis_url,
                **free_ports(), "AIOS_METRICS_PORT": "0", "AIOS_API_PORT": "0", "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"})
    aios = str(venv / "bin" / "aios")
    assert _import_fails(venv, "qdrant_client") and _import_fails(venv, "onnxruntime")  # no extras
    _run(aios, "topics", "create", env=env)
    up = subprocess.Popen([aios, "up", "--no-stack"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, cwd=tmp_path)
    try:
        _wait_ready(up)
        doc: dict[str, Any] = json.loads(_run(aios, "submit", "Say hello", "--wait", "--timeout", "90", "--json",
                                              env=env).splitlines()[-1])
        assert doc["result"]["status"] == "succeeded", doc
    except AssertionError:
        up.send_signal(signal.SIGTERM)
        _, err = up.communicate(timeout=90)
        raise AssertionError(f"aios up said:\n{err[-4000:]}") from None
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=90)
        delete_topics(base_settings.replace(topic_prefix=env["AIOS_TOPIC_PREFIX"]))
    assert up.returncode == 0


def _import_fails(venv: Path, module: str) -> bool:
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"], capture_output=True, timeout=60)
    return proc.returncode != 0


def _wait_ready(up: subprocess.Popen[str], timeout_s: float = 90) -> None:
    assert up.stderr is not None
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = up.stderr.readline()
        lines.append(line)
        if "aios: ready" in line:
            return
        if not line and up.poll() is not None:
            break
    raise AssertionError("aios up did not get ready:\n" + "".join(_lines(lines)))


def _lines(lines: list[str]) -> Iterator[str]:
    yield from lines[-40:]
