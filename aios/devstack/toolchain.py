"""The toolchain the local stack needs: Java 17+ and the Kafka jars (resolved from Maven Central)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from aios.streams.errors import StackError

REPO_ROOT = Path(__file__).resolve().parents[2]


MIN_JAVA = 17


MVN_ARGS = ("-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=lib", "-DincludeScope=runtime")


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output ('1.8.0_292' -> 8, '17.0.15' -> 17), else None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output) or re.search(
        r"^\S+ (\d+)(?:\.(\d+))?", version_output, re.MULTILINE
    )
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


Which = Callable[[str], str | None]


def which_on(path: str | None) -> Which:
    return lambda name: shutil.which(name, path=path)


def find_java(which: Which) -> str:
    """The java binary, checked to be Java 17 or newer."""
    java = which("java")
    if java is None:
        raise StackError(
            f"Java {MIN_JAVA}+ not found on PATH: install openjdk-17-jre-headless "
            "(apt-get install -y openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)  # noqa: S603
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise StackError(
            f"Java {MIN_JAVA}+ is needed to run Kafka, but {java} is version {major or 'unknown'}: "
            "install openjdk-17-jre-headless (apt-get install -y openjdk-17-jre-headless) and put it first on PATH"
        )
    return java


def ensure_kafka_jars(kafka_infra: Path, which: Which) -> Path:
    """``infra/kafka/lib`` with the broker's jars, fetched from Maven Central with mvn when missing."""
    lib = kafka_infra / "lib"
    if lib.is_dir() and any(lib.glob("*.jar")):
        return lib
    command = f"cd {kafka_infra} && mvn {' '.join(MVN_ARGS)}"
    mvn = which("mvn")
    if mvn is None:
        raise StackError(
            f"Kafka jars are missing and mvn is not on PATH: apt-get install -y maven, then {command}"
        )
    out = subprocess.run(  # noqa: S603
        [mvn, *MVN_ARGS], cwd=kafka_infra, capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0 or not any(lib.glob("*.jar")):
        log = "\n".join((out.stdout + out.stderr).splitlines()[-20:])
        raise StackError(
            f"fetching the Kafka jars failed (mvn exit {out.returncode}); retry: {command}\n{log}"
        )
    return lib
