"""One batch of Kafka records into the history store, as the sink and its benchmark both run it.

Record types mapped onto the ingest table (avro_ingest.py) go to ClickHouse as Avro, undecoded:
Python reads only the framing and builds one container per record type, and the batch's
containers are stored together (one INSERT on chdb). Everything else (older writer versions,
record types the ingest mapping does not cover) is decoded in Python and inserted as JSON rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connectors.errors import StoreQueryError
from connectors.history.avro_ingest import ContainerBuilder, IngestTable
from connectors.history.base import EventRow, HistoryStore
from schemas.codec import Codec, Decoded, RecordSchema
from schemas.errors import SchemaError
from schemas.events import event_json, to_ms


@dataclass(frozen=True)
class Record:
    """What the writer needs of a Kafka message."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class BatchResult:
    stored: int = 0
    native: int = 0  # of which ClickHouse decoded
    rejected: list[tuple[Record, SchemaError]] = field(default_factory=list)
    refused: str | None = None  # why ClickHouse refused the native INSERT, when Python decoded the batch instead


def to_row(decoded: Decoded, topic: str, partition: int, offset: int) -> EventRow:
    v = decoded.value
    status = v.get("status") or v.get("state") or v.get("outcome") or ""
    return EventRow(
        event_id=v["event_id"],
        event_type=decoded.name.rsplit(".", 1)[-1],
        topic=topic,
        partition=partition,
        offset=offset,
        ts=to_ms(v["timestamp"]),
        trace_id=v["trace_id"],
        task_id=v.get("task_id") or "",
        project_id=v.get("project_id") or "",
        role=v.get("role") or "",
        status=str(status),
        payload=event_json(v).decode(),
    )


def write_batch(store: HistoryStore, codec: Codec, records: Sequence[Record]) -> BatchResult:
    """Store ``records``; return what was stored and the records that cannot be decoded.

    Raises StoreUnavailableError (retry the whole batch: rows are idempotent on event_id) or
    StoreQueryError when the store rejects data that Python decodes without fault.
    """
    result = BatchResult()
    rows: list[EventRow] = []
    native = _NativeBatch(store.ingest)
    for record in records:
        try:
            writer, body, _ = codec.frame(record.value)
        except SchemaError as exc:
            result.rejected.append((record, exc))
            continue
        if not native.add(writer, record, body):
            row = _python_row(codec, record, result)
            if row is not None:
                rows.append(row)
    if native.groups:
        rows += _insert_native(store, codec, native, result)
    store.insert(rows)  # raises StoreQueryError when the store refuses even these
    result.stored = result.native + len(rows)
    return result


class _NativeBatch:
    """The batch's events that ClickHouse decodes: one container per record type."""

    def __init__(self, ingest: Mapping[str, IngestTable]) -> None:
        self.ingest = ingest
        self.groups: dict[bytes, tuple[ContainerBuilder, list[Record]]] = {}  # by writer fingerprint
        self._python: set[bytes] = set()  # writers whose events take the Python path

    def add(self, writer: RecordSchema, record: Record, body: bytes) -> bool:
        """Add the event if its writer is the current schema of a mapped record type."""
        group = self.groups.get(writer.fingerprint)
        if group is None:
            table = self.ingest.get(writer.name)
            if writer.fingerprint in self._python or table is None or table.fingerprint != writer.fingerprint:
                self._python.add(writer.fingerprint)
                return False
            group = self.groups[writer.fingerprint] = (ContainerBuilder(table), [])
        group[0].add(record.topic, record.partition, record.offset, body)
        group[1].append(record)
        return True


def _python_row(codec: Codec, record: Record, result: BatchResult) -> EventRow | None:
    try:
        return to_row(codec.decode(record.value), record.topic, record.partition, record.offset)
    except SchemaError as exc:
        result.rejected.append((record, exc))
        return None


def _insert_native(store: HistoryStore, codec: Codec, batch: _NativeBatch, result: BatchResult) -> list[EventRow]:
    """All the containers in one ``insert_avro``; set ``result.native``.

    Returns nothing when ClickHouse stored the batch. It refuses the whole INSERT for one body
    that is corrupt, not UTF-8, or longer than its schema says (avro_ingest's constraints); then
    Python's decoder sorts the batch out (slow, but only on this path): what it cannot decode is
    rejected, and the rest is returned as rows for the Python path, as fastavro reads them.
    """
    try:
        store.insert_avro([(builder.ingest, builder.build()) for builder, _ in batch.groups.values()])
    except StoreQueryError as exc:
        result.refused = str(exc)
        return [row for _, members in batch.groups.values() for record in members
                if (row := _python_row(codec, record, result)) is not None]
    result.native = sum(len(members) for _, members in batch.groups.values())
    return []
