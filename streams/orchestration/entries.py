"""Project state as entries of a compacted log: one per project, one per task.

The orchestrator writes only the entries an event changed, keyed so that compaction keeps the
latest of each; a restarted orchestrator folds a partition's entries back into project states.
Pure: bytes in, bytes out, no Kafka.
"""

from __future__ import annotations

import json
from typing import Any

from aios.streams.orchestration.state import ProjectState

SEP = "\x1f"  # unit separator: cannot appear in project or task ids


# The input positions the partition's state corresponds to (no project id starts with SEP).
POSITIONS_KEY = f"{SEP}positions".encode()


def entry_key(project: str, task_id: str | None = None) -> bytes:
    return (project if task_id is None else f"{project}{SEP}{task_id}").encode()


def encode_positions(positions: dict[str, int]) -> bytes:
    """Input topic -> next offset to read, for one partition number of the co-partitioned inputs."""
    return json.dumps(positions).encode()


def encode_changes(state: ProjectState) -> list[tuple[bytes, bytes | None]]:
    """The entries changed since the last call: (key, JSON value), or (key, None) for a removed task."""
    meta, nodes = state.changes()
    project = state.dag.project
    # ensure_ascii=False: an output in another script is its UTF-8 size in the entry, not up to
    # three times that in \u escapes (an entry must fit in a Kafka message).
    out: list[tuple[bytes, bytes | None]] = [(entry_key(project), json.dumps(meta, ensure_ascii=False).encode())]
    out += [(entry_key(project, tid), None if node is None else json.dumps(node, ensure_ascii=False).encode())
            for tid, node in nodes.items()]
    return out


class Rebuilder:
    """Folds entries, oldest first, into project states; a later entry for a key replaces the earlier."""

    def __init__(self) -> None:
        self.metas: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, dict[str, Any]]] = {}
        self.positions: dict[str, int] = {}  # input topic -> next offset, as of the last entry

    def add(self, key: bytes, value: bytes | None) -> None:
        if key == POSITIONS_KEY:
            self.positions = json.loads(value) if value is not None else {}
            return
        project, _, task_id = key.decode().partition(SEP)
        if not task_id:
            if value is None:
                self.metas.pop(project, None)
            else:
                self.metas[project] = json.loads(value)
            return
        tasks = self.nodes.setdefault(project, {})
        if value is None:
            tasks.pop(task_id, None)
        else:
            tasks[task_id] = json.loads(value)

    def states(self) -> dict[str, ProjectState]:
        # A task entry without its project entry cannot happen (both go in one transaction); if a
        # log was truncated by hand, the orphans are dropped rather than guessed at.
        return {project: ProjectState.from_entries(meta, list(self.nodes.get(project, {}).values()))
                for project, meta in self.metas.items()}
