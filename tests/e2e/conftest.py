"""The whole pipeline through the ``aios`` command, as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aios.devstack.supervisor import free_port
from aios.schemas.errors import ConfigError
from aios.streams.topics import delete_topics
from tests.integration.conftest import base_settings  # noqa: F401 - shared fixture

AIOS = [sys.executable, "-c", "import sys; from aios.cli import main; sys.argv[0] = 'aios'; main()"]


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*AIOS, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"aios {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str, timeout: float = 120) -> Any:
        out = self.run(*args, "--json", timeout=timeout).stdout.strip().splitlines()
        return json.loads(out[-1])

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*AIOS, *args], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)


def free_ports() -> dict[str, str]:
    return {name: str(free_port()) for name in ("AIOS_API_PORT", "AIOS_CLICKHOUSE_HTTP_PORT",
                                                "AIOS_CLICKHOUSE_TCP_PORT", "AIOS_QDRANT_LOCAL_PORT")}


@pytest.fixture
def cli(tmp_path: Path, base_settings: Any) -> Iterator[Cli]:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "OPENAI_"))}
    env.update({
        "AIOS_TOPIC_PREFIX": f"e2e{uuid.uuid4().hex[:10]}",
        "AIOS_DATA_DIR": str(tmp_path / "data"),  # its own chdb: a CLI process is another process
        "AIOS_KAFKA_BOOTSTRAP": base_settings.kafka.bootstrap,
        "AIOS_REDIS_URL": base_settings.stores.redis_url,
        "AIOS_METRICS_PORT": "0",
        # `aios up`'s servers on free ports: tests run beside other stacks and each other.
        **free_ports(),
    })
    yield Cli(env)
    # The broker's heap is finite: leave no topics behind (those the test created, if any). A test
    # may have set a prefix that is not valid: then nothing was created under it.
    with contextlib.suppress(ConfigError):
        delete_topics(base_settings.replace(topic_prefix=env["AIOS_TOPIC_PREFIX"]))
