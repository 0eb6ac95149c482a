"""Avro codec for every AIOS event: Confluent wire format or Avro single-object encoding.

Writers use the Confluent format (magic 0 + 4-byte schema id, subject ``<topic>-value``) when a
schema registry is configured, so Kafka Connect's Avro converters read our topics; otherwise
Avro single-object encoding (0xC3 0x01 + little-endian CRC-64-AVRO fingerprint), which every
process derives from the same ``.avsc`` files. Readers detect the format from the first bytes.
"""

from __future__ import annotations

import enum
import io
import json
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import fastavro
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from aios.schemas.errors import (
    ConfigError,
    EncodeError,
    RecordTooLargeError,
    RegistryUnavailableError,
    UndecodableError,
    UnknownSchemaError,
)
from aios.schemas.limits import DEFAULT_MAX_MESSAGE_BYTES, RECORD_OVERHEAD_BYTES

AVRO_DIR = Path(__file__).parent / "avro"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
_EMPTY64 = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin CRC-64 fingerprint the Avro specification names CRC-64-AVRO."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


class WireFormat(enum.Enum):
    SINGLE_OBJECT = "single-object"
    CONFLUENT = "confluent"


@dataclass(frozen=True)
class RecordSchema:
    """One parsed schema version of a record."""

    name: str  # full name, e.g. aios.v1.Task
    raw: Mapping[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes  # 8 bytes, little-endian, as written after 0xC3 0x01

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def parse_record_schema(raw: Mapping[str, Any]) -> RecordSchema:
    """Parse one .avsc document; raise a SchemaError naming the problem."""
    try:
        parsed = fastavro.parse_schema(dict(raw), _write_hint=False)
        canonical = to_parsing_canonical_form(dict(raw))
    except Exception as exc:  # fastavro raises several unrelated types for a bad schema
        raise UnknownSchemaError(f"invalid Avro schema {raw.get('name')!r}: {exc}") from exc
    namespace = raw.get("namespace")
    name = f"{namespace}.{raw['name']}" if namespace and "." not in str(raw["name"]) else str(raw["name"])
    fingerprint = struct.pack("<Q", crc64_avro(canonical.encode()))
    return RecordSchema(name=name, raw=raw, parsed=parsed, canonical=canonical, fingerprint=fingerprint)


@dataclass
class SchemaCatalog:
    """Current reader schemas by name, plus every known writer version by fingerprint."""

    current: dict[str, RecordSchema] = field(default_factory=dict)
    by_fingerprint: dict[bytes, RecordSchema] = field(default_factory=dict)

    def add(self, schema: RecordSchema, *, current: bool = True) -> None:
        if current:
            self.current[schema.name] = schema
        self.by_fingerprint[schema.fingerprint] = schema

    def get(self, name: str) -> RecordSchema:
        full = name if "." in name else f"aios.v1.{name}"
        try:
            return self.current[full]
        except KeyError:
            known = ", ".join(sorted(s.short_name for s in self.current.values()))
            raise UnknownSchemaError(f"no schema named {name!r}; known: {known}") from None


def load_catalog(extra_writer_dirs: Iterable[Path] = ()) -> SchemaCatalog:
    """Load ``avro/*.avsc`` as the current schemas.

    ``extra_writer_dirs`` hold retired versions, so single-object readers can still resolve
    data written before a schema evolved.
    """
    catalog = SchemaCatalog()
    for path in sorted(AVRO_DIR.glob("*.avsc")):
        catalog.add(parse_record_schema(json.loads(path.read_text())))
    for directory in extra_writer_dirs:
        for path in sorted(Path(directory).glob("*.avsc")):
            catalog.add(parse_record_schema(json.loads(path.read_text())), current=False)
    return catalog


class Registry(Protocol):
    """The two calls the codec needs from a Confluent-compatible schema registry."""

    def register(self, subject: str, schema_json: str) -> int: ...

    def schema_by_id(self, schema_id: int) -> str: ...


class ConfluentRegistry:
    """Adapter over confluent-kafka's SchemaRegistryClient (``mock://`` works for tests)."""

    def __init__(self, url: str) -> None:
        try:
            from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
        except ImportError as exc:  # its HTTP dependencies come with the extra
            raise ConfigError(
                "AIOS_SCHEMA_REGISTRY_URL is set but the registry client is not installed: "
                "pip install 'aios[registry]'"
            ) from exc
        self._schema_cls = Schema
        # new_client() returns the in-memory MockSchemaRegistryClient for mock:// URLs; the plain
        # constructor would send HTTP requests to "mock://..." and fail.
        factory = getattr(SchemaRegistryClient, "new_client", SchemaRegistryClient)
        # Few, short retries inside the client (its defaults wait up to 7 s, then 20 s, per call): an
        # outage is waited out by the processors' own backoff, which is counted and logged.
        self._client = factory({"url": url, "max.retries": 2, "retries.wait.ms": 100, "retries.max.wait.ms": 1000,
                                "timeout": 10})
        self.url = url

    def register(self, subject: str, schema_json: str) -> int:
        try:
            return int(self._client.register_schema(subject, self._schema_cls(schema_json, "AVRO")))
        except Exception as exc:  # the client raises SchemaRegistryError or transport errors
            if _unreachable(exc):
                raise RegistryUnavailableError(
                    f"the schema registry at {self.url} did not answer registering {subject!r}: {exc}") from exc
            raise EncodeError(f"schema registry rejected subject {subject!r}: {exc}") from exc

    def schema_by_id(self, schema_id: int) -> str:
        try:
            return str(self._client.get_schema(schema_id).schema_str)
        except Exception as exc:
            if _unreachable(exc):
                raise RegistryUnavailableError(
                    f"the schema registry at {self.url} did not answer for schema id {schema_id}: {exc}") from exc
            raise UndecodableError(f"schema id {schema_id} is unknown to the registry: {exc}") from exc


def _unreachable(exc: Exception) -> bool:
    """Whether a registry call failed for want of a registry (retry later), not because of what was
    asked (an unknown id, an incompatible schema). Only an HTTP answer below 500 is the latter."""
    status = getattr(exc, "http_status_code", None)
    return not isinstance(status, int) or status >= 500 or status in (408, 429)


class Decoded(NamedTuple):
    name: str  # full record name
    value: dict[str, Any]
    format: WireFormat


class Codec:
    """Encode and decode AIOS events; thread-safe after construction."""

    def __init__(
        self, catalog: SchemaCatalog | None = None, registry: Registry | None = None, *, validate: bool = True,
        mixed_topics: frozenset[str] = frozenset(), max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.catalog = catalog or load_catalog()
        self.registry = registry
        # An event a topic would refuse is refused here, as the record's fault, with its size: from
        # librdkafka the same refusal is a producer error, fatal inside a transaction.
        self.max_message_bytes = max_message_bytes
        # Registry subjects follow TopicNameStrategy (<topic>-value): one record type per topic, its
        # versions checked for BACKWARD compatibility. A topic that carries several record types (the
        # orchestrator's outbox) gets TopicRecordNameStrategy instead (<topic>-<full record name>):
        # under one <topic>-value subject the second type would be refused as incompatible.
        self.mixed_topics = mixed_topics
        # Full validation costs about as much as writing; processors that only re-encode values
        # they decoded and built themselves may turn it off. Values from outside keep it on.
        self.validate = validate
        self._subject_ids: dict[tuple[str, str], int] = {}
        self._by_id: dict[int, RecordSchema] = {}
        self._lock = threading.Lock()

    @property
    def write_format(self) -> WireFormat:
        return WireFormat.CONFLUENT if self.registry is not None else WireFormat.SINGLE_OBJECT

    def encode(self, name: str, value: Mapping[str, Any], topic: str | None = None) -> bytes:
        """Serialize ``value`` as record ``name``; ``topic`` names the registry subject."""
        schema = self.catalog.get(name)
        buf = io.BytesIO()
        if self.registry is not None:
            if topic is None:
                raise EncodeError("encoding with a schema registry needs the topic (subject <topic>-value)")
            buf.write(struct.pack(">bI", CONFLUENT_MAGIC, self._schema_id(topic, schema)))
        else:
            buf.write(SINGLE_OBJECT_MAGIC)
            buf.write(schema.fingerprint)
        try:
            record = dict(value)
            # The writer alone accepts bools, floats and out-of-range numbers for int/long fields
            # (truncating 1.5 to 1, or writing ints that Java readers reject); validate first.
            if self.validate:
                validate(record, schema.parsed, raise_errors=True)
            fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
        except (ValidationError, ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"{schema.short_name} does not match its schema: {exc}") from exc
        if buf.tell() + RECORD_OVERHEAD_BYTES > self.max_message_bytes:
            raise RecordTooLargeError(
                f"{schema.short_name} of {buf.tell()} bytes is over the {self.max_message_bytes} bytes a topic takes "
                "(AIOS_MAX_MESSAGE_BYTES)")
        return buf.getvalue()

    def frame(self, data: bytes | None) -> tuple[RecordSchema, bytes, WireFormat]:
        """The writer schema and the Avro body of ``data``, read from the framing alone.

        Nothing past the header is read: the body may still be corrupt. The history sink uses this
        to learn which record type a body is before its transcoder reads it.
        """
        if not data or len(data) < 5:
            raise UndecodableError(f"{len(data or b'')} bytes is too short to be an AIOS event")
        if data[:2] == SINGLE_OBJECT_MAGIC and len(data) >= 10:
            writer = self.catalog.by_fingerprint.get(data[2:10])
            if writer is None:
                raise UndecodableError(
                    f"single-object fingerprint {data[2:10].hex()} matches no known schema version"
                )
            return writer, data[10:], WireFormat.SINGLE_OBJECT
        if data[0] == CONFLUENT_MAGIC:
            return self._writer_by_id(struct.unpack(">I", data[1:5])[0]), data[5:], WireFormat.CONFLUENT
        raise UndecodableError(f"unknown wire format (first bytes {data[:4].hex()})")

    def decode(self, data: bytes | None, expect: str | None = None) -> Decoded:
        """Decode bytes in either wire format; ``expect`` rejects other record types."""
        writer, payload, fmt = self.frame(data)
        if expect is not None and writer.short_name != expect and writer.name != expect:
            raise UndecodableError(f"expected a {expect} event, got {writer.short_name}")
        reader = self.catalog.current.get(writer.name, writer)
        try:
            value = fastavro.schemaless_reader(io.BytesIO(payload), writer.parsed, reader.parsed)
        except Exception as exc:  # truncated or corrupt payloads raise assorted errors
            raise UndecodableError(f"corrupt {writer.short_name} payload: {exc}") from exc
        if not isinstance(value, dict):
            raise UndecodableError(f"{writer.short_name} did not decode to a record")
        return Decoded(writer.name, value, fmt)

    def register(self, name: str, topic: str) -> int:
        """Register record ``name``'s current schema under ``topic``'s subject; return its id."""
        if self.registry is None:
            raise EncodeError("registering a schema needs a schema registry (AIOS_SCHEMA_REGISTRY_URL)")
        return self._schema_id(topic, self.catalog.get(name))

    def _schema_id(self, topic: str, schema: RecordSchema) -> int:
        key = (topic, schema.name)
        cached = self._subject_ids.get(key)
        if cached is not None:
            return cached
        if self.registry is None:  # only reachable through misuse: encode() checks first
            raise EncodeError("no schema registry configured")
        subject = f"{topic}-{schema.name}" if topic in self.mixed_topics else f"{topic}-value"
        schema_id = self.registry.register(subject, json.dumps(schema.raw))
        with self._lock:
            self._subject_ids[key] = schema_id
            self._by_id[schema_id] = schema
        return schema_id

    def _writer_by_id(self, schema_id: int) -> RecordSchema:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        if self.registry is None:
            raise UndecodableError(
                f"Confluent-framed event (schema id {schema_id}) but no schema registry is configured; "
                "set AIOS_SCHEMA_REGISTRY_URL"
            )
        writer = parse_record_schema(json.loads(self.registry.schema_by_id(schema_id)))
        with self._lock:
            self._by_id[schema_id] = writer
        return writer
