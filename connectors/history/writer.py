"""One batch of Kafka records into the history store, as the sink and its benchmark both run it.

Record types mapped onto the ingest table (avro_ingest.py) go to ClickHouse as Avro, undecoded:
Python reads only the framing and builds one container per record type, and the batch's
containers are stored together (one INSERT on chdb). Everything else (older writer versions,
record types the ingest mapping does not cover) is decoded in Python and inserted as JSON rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from connectors.errors import StoreQueryError
from connectors.history.avro_ingest import ContainerBuilder, IngestTable
from connectors.history.base import EventRow, HistoryStore
from schemas.codec import Codec, Decoded
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
    native: dict[str, tuple[IngestTable, list[tuple[Record, bytes]]]] = {}
    ingest = store.ingest
    for record in records:
        try:
            writer, body, _ = codec.frame(record.value)
        except SchemaError as exc:
            result.rejected.append((record, exc))
            continue
        table = ingest.get(writer.name)
        if table is not None and table.fingerprint == writer.fingerprint:
            native.setdefault(writer.name, (table, []))[1].append((record, body))
            continue
        row = _python_row(codec, record, result)
        if row is not None:
            rows.append(row)
    if native:
        result.native = _insert_native(store, codec, list(native.values()), result)
    store.insert(rows)
    result.stored = result.native + len(rows)
    return result


def _python_row(codec: Codec, record: Record, result: BatchResult) -> EventRow | None:
    try:
        return to_row(codec.decode(record.value), record.topic, record.partition, record.offset)
    except SchemaError as exc:
        result.rejected.append((record, exc))
        return None


def _container(table: IngestTable, members: Sequence[tuple[Record, bytes]]) -> bytes:
    builder = ContainerBuilder(table)
    for record, body in members:
        builder.add(record.topic, record.partition, record.offset, body)
    return builder.build()


def _insert_native(store: HistoryStore, codec: Codec,
                   groups: list[tuple[IngestTable, list[tuple[Record, bytes]]]], result: BatchResult) -> int:
    """One container per record type, all in one ``insert_avro``; return the events stored."""
    try:
        store.insert_avro([(table, _container(table, members)) for table, members in groups])
        return sum(len(members) for _, members in groups)
    except StoreQueryError:
        # ClickHouse rejects the whole INSERT for one corrupt body. Find the bad ones with the
        # Python decoder (slow, but only on this path) and store the rest, still natively.
        good: list[tuple[IngestTable, list[tuple[Record, bytes]]]] = []
        for table, members in groups:
            kept: list[tuple[Record, bytes]] = []
            for record, body in members:
                try:
                    codec.decode(record.value)
                except SchemaError as exc:
                    result.rejected.append((record, exc))
                    continue
                kept.append((record, body))
            if kept:
                good.append((table, kept))
        if sum(len(m) for _, m in good) == sum(len(m) for _, m in groups):
            raise  # every event decodes: the store itself refused the data
    if good:
        store.insert_avro([(table, _container(table, members)) for table, members in good])
    return sum(len(members) for _, members in good)
