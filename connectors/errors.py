"""Errors of the connector layer (see schemas/errors.py for the whole tree)."""

from __future__ import annotations

from aios.schemas.errors import AiosError, UnavailableError


class ConnectorError(AiosError):
    """An external store failed or was misused."""


class StoreUnavailableError(ConnectorError, UnavailableError):
    """The store could not be reached; retrying later may succeed (never the record's fault)."""


class StoreQueryError(ConnectorError):
    """The store rejected a statement (a bug or a schema mismatch, not an outage)."""
