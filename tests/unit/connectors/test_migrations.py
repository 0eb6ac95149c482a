"""The migration list and the runner's bookkeeping (pure: the SQL goes to a recording fake)."""

from __future__ import annotations

from typing import Any

import pytest

from aios.connectors.history.migrations import MIGRATIONS_TABLE, migrate, migrations


def test_versions_are_numbered_from_one_without_gaps_and_every_table_gets_the_ttl() -> None:
    found = migrations(30)
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    creates = [s for m in found[1:] for s in m.statements if s.startswith("CREATE TABLE")]
    assert creates and all("INTERVAL 30 DAY" in s for s in creates)
    assert all("IF NOT EXISTS" in s for m in found for s in m.statements if s.startswith("CREATE"))


def test_a_ttl_below_one_day_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 day"):
        migrations(0)


class Recorder:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.versions: set[int] = set()

    def execute(self, sql: str) -> None:
        self.statements.append(sql)
        if sql.startswith(f"INSERT INTO {MIGRATIONS_TABLE}"):
            self.versions.add(int(sql.split("VALUES (")[1].split(",")[0]))

    def query(self, sql: str) -> list[dict[str, Any]]:
        return [{"version": v} for v in sorted(self.versions)]


def test_migrate_applies_each_version_once() -> None:
    db = Recorder()
    every = [m.version for m in migrations(90)]
    first = migrate(db.execute, db.query, 90)
    assert first.applied == every and first.already_applied == []
    count = len(db.statements)
    second = migrate(db.execute, db.query, 90)
    assert second.applied == [] and second.already_applied == every
    assert len(db.statements) == count + 2  # only the bookkeeping table's own IF NOT EXISTS
