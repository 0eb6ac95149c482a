"""The AIOS exception tree. The root lives in the lowest layer so every layer can extend it.

    AiosError
    ├── ConfigError              a setting is missing or wrong (says which env var to set)
    ├── SchemaError              contracts and the wire format
    │   ├── UnknownSchemaError   a record name or fingerprint/schema id that no .avsc defines
    │   ├── EncodeError          a value does not match its schema
    │   ├── UndecodableError     bytes that decode in neither wire format (goes to the DLQ)
    │   └── JsonTooDeepError     JSON from outside nested past the limit (schemas/jsonlimits.py)
    ├── ConnectorError           Redis, ClickHouse, Qdrant, Kafka admin (defined in connectors/)
    ├── LLMError                 providers and routing (defined in agents/)
    └── OrchestrationError       processors, topics, the local stack (defined in streams/)

Third-party exceptions are wrapped at the boundary with ``raise X(...) from exc``.
"""

from __future__ import annotations


class AiosError(Exception):
    """Root of every error AIOS raises on purpose."""


class ConfigError(AiosError):
    """A setting is missing or invalid; the message names what to set."""


class SchemaError(AiosError):
    """A contract or wire-format problem."""


class UnknownSchemaError(SchemaError):
    """No schema is known for a record name, fingerprint or registry id."""


class EncodeError(SchemaError):
    """A value does not conform to its Avro schema."""


class UndecodableError(SchemaError):
    """Bytes that are neither single-object Avro nor Confluent-framed Avro we can resolve."""
