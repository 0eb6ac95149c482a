"""Jobs: one-off work over the log (rebuilding Redis and Qdrant from aios.memory)."""
