"""Connectors for an agent's context in Redis: rolling windows, the LLM journal, token counts,
and the API's key store and rate limiter."""
