"""Adapters to external systems: Redis context, ClickHouse history (chdb or server)."""
