"""The AIOS exception tree. The root lives in the lowest layer so every layer can extend it.

    AiosError
    ├── ConfigError              a setting is missing or wrong (says which env var to set)
    ├── SchemaError              contracts and the wire format: the record's fault (goes to the DLQ)
    │   ├── UnknownSchemaError   a record name or fingerprint/schema id that no .avsc defines
    │   ├── EncodeError          a value does not match its schema
    │   │   └── RecordTooLargeError  an encoded event over AIOS_MAX_MESSAGE_BYTES (schemas/limits.py)
    │   ├── UndecodableError     bytes that decode in neither wire format
    │   ├── InvalidRecordError   a decoded event outside the limits (schemas/checks.py)
    │   └── JsonTooDeepError     JSON from outside nested past the limit (schemas/jsonlimits.py)
    ├── UnavailableError         a server a record needs cannot be reached: never the record's
    │   │                        fault, so processors wait and retry, never dead-letter
    │   ├── RegistryUnavailableError  the schema registry (schemas/codec.py)
    │   └── StoreUnavailableError     Redis, ClickHouse, Qdrant (also a ConnectorError)
    ├── ConnectorError           Redis, ClickHouse, Qdrant, Kafka admin (defined in connectors/)
    ├── LLMError                 providers and routing (defined in agents/)
    └── OrchestrationError       processors, topics, the local stack (defined in streams/)

Third-party exceptions are wrapped at the boundary with ``raise X(...) from exc``. Which failures
dead-letter a record and which are waited out is decided in one place:
``streams/engine/failures.py``.
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


class RecordTooLargeError(EncodeError):
    """An encoded event larger than a topic takes (AIOS_MAX_MESSAGE_BYTES); says what was too big."""


class InvalidRecordError(SchemaError):
    """A decoded event that breaks the limits every entry point shares; ``problems`` lists each."""

    def __init__(self, record: str, problems: list[str]) -> None:
        super().__init__(f"invalid {record}: " + "; ".join(problems))
        self.record = record
        self.problems = problems


class UnavailableError(AiosError):
    """A server that a record needs (schema registry, Redis, ClickHouse, Qdrant) cannot be reached.

    Never the record's fault: a processor waits and tries the same record again, it does not
    dead-letter it.
    """


class RegistryUnavailableError(UnavailableError):
    """The schema registry did not answer (connection refused, timeout, 5xx, 429)."""
