"""Building ClickHouse SQL from values safely: every value that reaches a query goes through here."""

from __future__ import annotations


def quote(value: str) -> str:
    """``value`` as a ClickHouse string literal (backslashes and quotes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def where(**equals: str | None) -> str:
    """`` WHERE a = 'x' AND b = 'y'`` for the columns given a value (None leaves a column out)."""
    parts = [f"{column} = {quote(value)}" for column, value in equals.items() if value is not None]
    return f" WHERE {' AND '.join(parts)}" if parts else ""
