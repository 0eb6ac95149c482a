"""AIOS as a user installs it: the wheels the Dockerfile builds, no extras, in a fresh venv with no
source tree, beside OpenAI's Agents SDK.

The wheels are built the way the image builds them: the Dockerfile's COPY lines are replayed on the
build context (less .dockerignore) and its own build commands run there, `pip wheel` for the project
and `maturin build --release --locked` for the history sink's Rust transcoder
(tests/unit/dockerfile_context.py). So a package folder or data file the Dockerfile leaves out is
missing here too. It proves that the wheel carries every package and data file, that everything
installs under the one ``aios`` namespace (so ``import agents`` is still OpenAI's), that every
command answers --help, that `aios api` starts and serves /healthz and the dashboard from the
wheel, and that a base install without the ``vector`` extra runs the pipeline, with the transcoder.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aios.streams.settings import Settings
from aios.streams.topics import delete_topics
from tests.e2e.conftest import free_ports
from tests.integration.local_servers import free_port
from tests.unit.dockerfile_context import parse_dockerfile, replay, stage

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
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


DOCKER_STAGES = parse_dockerfile((ROOT / "Dockerfile").read_text())


def _image_command(run: str, program: str, image_root: Path, replace: dict[str, str]) -> list[str]:
    """A RUN line's ``program`` command, its words at image paths moved under ``image_root``."""
    words = shlex.split(run)
    start = next(i for i, w in enumerate(words) if w.endswith(program))
    end = next((i for i in range(start, len(words)) if words[i] in ("&&", ";")), len(words))
    out = []
    for word in words[start + 1:end]:
        out.append(replace.get(word, str(image_root / word.lstrip("/")) if word.startswith("/") else word))
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project wheel, built by the build stage's `pip wheel` from its replayed context."""
    image = tmp_path_factory.mktemp("image-build")
    build = stage(DOCKER_STAGES, "build")
    src = replay(ROOT, build, image)
    run = next(r for r in build.runs if "pip wheel" in r)
    args = _image_command(run, "pip", image, {})
    # The dependencies come from PyPI when the venv installs the wheel; only the project is built here.
    args = [a.replace(".[", f"{src}[", 1) if a.startswith(".[") else a for a in args]
    _run(sys.executable, "-m", "pip", *args, "-q", "--no-deps")
    return next((image / "wheels").glob("aios-*.whl"))


@pytest.fixture(scope="module")
def transcoder_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The transcoder's wheel, built by the transcoder stage's maturin command (and maturin version)
    from its replayed context. Cargo's target folder is the checkout's, so a warm build is quick."""
    image = tmp_path_factory.mktemp("image-transcoder")
    transcoder = stage(DOCKER_STAGES, "transcoder")
    replay(ROOT, transcoder, image)
    setup = next(r for r in transcoder.runs if "maturin>=" in r or "maturin<" in r)
    maturin_spec = next(w for w in shlex.split(setup) if w.startswith("maturin"))
    tools = tmp_path_factory.mktemp("maturin-venv")
    _run(sys.executable, "-m", "venv", "--without-pip", tools)
    _run(UV, "pip", "install", "-q", "--python", tools / "bin" / "python", maturin_spec)
    run = next(r for r in transcoder.runs if "maturin build" in r)
    args = _image_command(run, "maturin", image, {})
    env = {**os.environ, "CARGO_TARGET_DIR": str(ROOT / "connectors" / "history" / "transcoder" / "target")}
    _run(tools / "bin" / "maturin", *args, env=env)
    return next(image.glob("wheels/aios_transcoder-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel: Path, transcoder_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with both wheels (no extras) and the OpenAI Agents SDK, whose import name is `agents`."""
    path = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", path)
    # uv (the installer `make install` uses) resolves and installs from PyPI the same wheels as pip, in
    # a fraction of pip's CPU: this fixture was the suite's longest setup. It does not byte-compile;
    # the modules a test imports are compiled as they are imported.
    _run(UV, "pip", "install", "-q", "--python", path / "bin" / "python", wheel, transcoder_wheel, "openai-agents")
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


def test_the_transcoder_wheel_is_what_the_history_sink_loads(venv: Path) -> None:
    code = ("import aios_transcoder; from aios.connectors.history import transcode; "
            "print(transcode.AVAILABLE, aios_transcoder.__file__)")
    available, where = _run(venv / "bin" / "python", "-c", code).split()
    assert available == "True" and f"{venv}/lib/" in where


def _env(venv: Path, base_settings: Settings, tmp_path: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_", "VIRTUAL_ENV"))}
    env.update({"AIOS_TOPIC_PREFIX": f"{prefix}{uuid.uuid4().hex[:10]}", "AIOS_DATA_DIR": str(tmp_path / "data"),
                "AIOS_KAFKA_BOOTSTRAP": base_settings.kafka.bootstrap, "AIOS_REDIS_URL": base_settings.stores.redis_url,
                **free_ports(), "AIOS_METRICS_PORT": "0", "AIOS_API_PORT": "0",
                "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"})
    return env


def test_aios_api_starts_from_the_wheel_and_serves_the_dashboard(venv: Path, base_settings: Settings,
                                                                 tmp_path: Path) -> None:
    env = _env(venv, base_settings, tmp_path, "api")
    _run(venv / "bin" / "aios", "topics", "create", env=env)  # the API's live view reads them from the start
    port = free_port()
    api = subprocess.Popen([str(venv / "bin" / "aios"), "api", "--port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        _wait_ready(api, what="aios api")
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/healthz", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        # The dashboard's files come from the installed wheel, byte for byte.
        static = Path(_run(venv / "bin" / "python", "-c",
                           "import aios.api, pathlib; print(pathlib.Path(aios.api.__file__).parent / 'static')").strip())
        assert str(static).startswith(str(venv))
        page = httpx.get(f"{base}/", timeout=30)
        assert page.status_code == 200 and page.content == (static / "index.html").read_bytes()
        files = sorted(p.name for p in static.iterdir() if p.is_file())
        assert {"index.html", "dashboard.js", "dashboard.css"} <= set(files)
        for name in files:
            answer = httpx.get(f"{base}/static/{name}", timeout=30)
            assert answer.status_code == 200 and answer.content == (static / name).read_bytes(), name
    finally:
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(timeout=60)
        except subprocess.TimeoutExpired:
            api.kill()
            raise
        finally:
            delete_topics(base_settings.replace(topic_prefix=env["AIOS_TOPIC_PREFIX"]))
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again so that whoever started
    # the process sees how it ended: -SIGTERM is a clean stop too.
    assert api.returncode in (0, -signal.SIGTERM), api.stderr.read() if api.stderr else ""


# Every command and subcommand's --help, in one process of the installed venv (a process each took
# minutes on a loaded machine): the exit code and the first line of each, as JSON.
EVERY_HELP = """
import json
import click
from click.testing import CliRunner
from aios.cli import cli

def walk(group, path):
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        yield path + [name]
        if isinstance(command, click.Group):
            yield from walk(command, path + [name])

runner, out = CliRunner(), {}
for path in walk(cli, []):
    result = runner.invoke(cli, [*path, "--help"])
    out[" ".join(path)] = [result.exit_code, (result.output.strip().splitlines() or [""])[0]]
print(json.dumps(out))
"""


def test_every_command_answers_help(venv: Path) -> None:
    aios = venv / "bin" / "aios"
    top = _run(aios, "--help")  # the console script itself
    commands = [line.split()[0] for line in top.split("Commands:")[1].splitlines() if line.strip()]
    assert {"up", "worker", "submit", "status", "stats", "dev", "topics", "api", "bench"} <= set(commands)
    helps: dict[str, list[Any]] = json.loads(_run(venv / "bin" / "python", "-c", EVERY_HELP).splitlines()[-1])
    assert set(commands) <= set(helps), "every top-level command was walked"
    assert {"dev llm", "bench capacity", "dlq replay", "artifacts get", "keys create"} <= set(helps)
    failed = {path: first for path, (code, first) in helps.items() if code != 0 or not first.startswith("Usage: ")}
    assert not failed, failed


def test_a_base_install_runs_the_pipeline_with_vector_memory_off(venv: Path, base_settings: Settings,
                                                                  tmp_path: Path) -> None:
    env = _env(venv, base_settings, tmp_path, "inst")
    aios = str(venv / "bin" / "aios")
    assert _import_fails(venv, "qdrant_client") and _import_fails(venv, "onnxruntime")  # no extras
    _run(aios, "topics", "create", env=env)
    up = subprocess.Popen([aios, "up", "--no-stack"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, cwd=tmp_path)
    said = ""
    try:
        said = _wait_ready(up)
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
            said += up.communicate(timeout=90)[1]
        delete_topics(base_settings.replace(topic_prefix=env["AIOS_TOPIC_PREFIX"]))
    assert up.returncode == 0
    # The history sink found the transcoder the image installs (else it says it decodes in Python).
    assert "aios_transcoder extension is not installed" not in said, said[-2000:]


def _import_fails(venv: Path, module: str) -> bool:
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"], capture_output=True, timeout=60)
    return proc.returncode != 0


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float = 90, what: str = "aios up") -> str:
    """Read the process's stderr until it says it is ready; returns what it said until then."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "aios: ready" in line:
            return "".join(lines)
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{what} did not get ready (exit {proc.poll()}):\n" + "".join(_lines(lines)))


def _lines(lines: list[str]) -> Iterator[str]:
    yield from lines[-40:]
