"""What the Dockerfile's build stages see: its COPY lines applied to the build context (the repository
less .dockerignore), so tests can check, and rebuild, exactly what the image would hold.

There is no Docker engine here. Parsing the Dockerfile and replaying its COPY lines is the next
best proof: a package folder or data file that a COPY line or .dockerignore leaves out is missing
from the replayed context, and the wheel built from it (tests/e2e/test_install.py) lacks it too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str  # absolute in the image


@dataclass
class Stage:
    name: str
    workdir: str = "/"
    copies: list[Copy] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, args = whole.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name))
        elif not stages:
            continue
        elif keyword == "WORKDIR":
            stage = stages[-1]
            stage.workdir = str(PurePosixPath(stage.workdir) / args)
        elif keyword == "COPY":
            words = json.loads(args) if args.startswith("[") else shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue  # from another stage, not the build context
            words = [w for w in words if not w.startswith("--")]
            dest = str(PurePosixPath(stages[-1].workdir) / words[-1])
            if words[-1].endswith("/"):
                dest += "/"
            stages[-1].copies.append(Copy(tuple(words[:-1]), dest))
        elif keyword == "RUN":
            stages[-1].runs.append(args)
    return stages


def stage(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def dockerignore_patterns(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.exists():
        return []
    return [line.strip().lstrip("/") for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a match on a folder covers
    everything below it; ``**`` matches any number of folders."""
    verdict = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _regex(pattern[1:] if negate else pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def context_entries(root: Path, build: Stage, patterns: list[str]) -> dict[str, Path]:
    """Image path -> repository path of every file or symlink the stage's COPY lines bring in."""
    out: dict[str, Path] = {}
    for copy in build.copies:
        into_dir = copy.dest.endswith("/") or len(copy.sources) > 1
        for source in copy.sources:
            src = root / source
            if ignored(source, patterns) or not (src.exists() or src.is_symlink()):
                continue
            if src.is_dir() and not src.is_symlink():
                for dirpath, dirnames, filenames in os.walk(src):
                    here = Path(dirpath)
                    for name in [*filenames, *[d for d in dirnames if (here / d).is_symlink()]]:
                        rel = (here / name).relative_to(root).as_posix()
                        if not ignored(rel, patterns):
                            out[str(PurePosixPath(copy.dest) / (here / name).relative_to(src).as_posix())] = here / name
                    dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()
                                   and not ignored((here / d).relative_to(root).as_posix(), patterns)]
            else:
                dest = PurePosixPath(copy.dest) / src.name if into_dir else PurePosixPath(copy.dest)
                out[str(dest)] = src
    return out


def replay(root: Path, build: Stage, into: Path, ignore: list[str] | None = None) -> Path:
    """Materialise the stage's view of the context under ``into`` (image paths made relative);
    symlinks stay symlinks, as COPY keeps them. ``ignore`` replaces .dockerignore's patterns.
    Returns ``into``/<WORKDIR>."""
    patterns = dockerignore_patterns(root) if ignore is None else ignore
    for image_path, source in context_entries(root, build, patterns).items():
        target = into / image_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return into / build.workdir.lstrip("/")


def wheel_inputs(root: Path) -> list[str]:
    """Every file the project wheel is built from, as paths under the repository (through ``aios/``'s
    links): each module of the ``aios`` packages, the package data pyproject.toml lists, and the
    files the build itself reads."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    out = ["pyproject.toml", str(config["project"]["readme"])]
    package = root / "aios"
    for dirpath, dirnames, filenames in os.walk(package, followlinks=True):
        here = Path(dirpath)
        out += [(here / f).relative_to(root).as_posix() for f in filenames if f.endswith(".py")]
        # Only packages hold modules (not the transcoder's Rust crate, nor the static folders).
        dirnames[:] = [d for d in dirnames if (here / d / "__init__.py").exists()]
    for name, globs in config["tool"]["setuptools"]["package-data"].items():
        folder = root.joinpath(*name.split("."))
        for pattern in globs:
            out += [p.relative_to(root).as_posix() for p in folder.glob(pattern) if p.is_file()]
    return sorted(set(out))


def crate_inputs(root: Path, crate: str) -> list[str]:
    """The Rust crate's tracked files (its build output folder is not an input)."""
    listed = subprocess.run(["git", "ls-files", crate], cwd=root, capture_output=True, text=True, check=True)
    return sorted(line for line in listed.stdout.splitlines() if line)


def missing_inputs(root: Path, dockerfile: str, scratch: Path, ignore: list[str] | None = None) -> dict[str, list[str]]:
    """Per stage, the inputs its replayed context lacks (empty lists: the Dockerfile is complete)."""
    stages = parse_dockerfile(dockerfile)
    build, transcoder = stage(stages, "build"), stage(stages, "transcoder")
    src = replay(root, build, scratch / "build", ignore)
    crate_copy = next(c for c in transcoder.copies if any("transcoder" in s for s in c.sources))
    crate_dir = crate_copy.sources[0].rstrip("/")
    crate_root = replay(root, transcoder, scratch / "transcoder", ignore) / crate_copy.dest.lstrip("/")
    return {
        "build": [p for p in wheel_inputs(root) if not (src / p).exists()],
        "transcoder": [p for p in crate_inputs(root, crate_dir)
                       if not (crate_root / Path(p).relative_to(crate_dir)).exists()],
    }
