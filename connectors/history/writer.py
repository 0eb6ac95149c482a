"""One batch of Kafka records into the history store, as the sink and its benchmark both run it.

Events of record types mapped onto the ingest table (ingest.py) are turned into Native blocks by
the transcoder (transcode.py) and stored with one INSERT, never decoded in Python. Everything else
(older writer versions, record types the mapping does not cover, bodies the transcoder does not
take) is decoded in Python and inserted as JSON rows, or rejected when it does not decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aios.connectors.errors import StoreQueryError
from aios.connectors.history.base import TYPED_TABLES, EventRow, HistoryStore
from aios.connectors.history.transcode import NativeBatch
from aios.schemas.codec import Codec, Decoded
from aios.schemas.errors import SchemaError
from aios.schemas.events import event_json, to_ms


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
    native: int = 0  # of which stored from the transcoder's Native blocks
    rejected: list[tuple[Record, SchemaError]] = field(default_factory=list)
    refused: str | None = None  # why ClickHouse refused the native INSERT, when Python decoded the batch instead


def to_row(decoded: Decoded, topic: str, partition: int, offset: int) -> EventRow:
    v = decoded.value
    status = v.get("status") or v.get("state") or v.get("outcome") or ""
    event_type = decoded.name.rsplit(".", 1)[-1]
    # A typed event's JSON fills its typed table only, which takes the record's topic where it has a
    # column for it (results.topic) and skips it elsewhere; an untyped event's JSON is stored as it is.
    payload = event_json({**v, "topic": topic} if event_type in TYPED_TABLES else v).decode()
    return EventRow(
        event_id=v["event_id"],
        event_type=event_type,
        topic=topic,
        partition=partition,
        offset=offset,
        ts=to_ms(v["timestamp"]),
        trace_id=v["trace_id"],
        task_id=v.get("task_id") or "",
        project_id=v.get("project_id") or "",
        role=v.get("role") or "",
        status=str(status),
        payload=payload,
    )


def write_batch(store: HistoryStore, codec: Codec, records: Sequence[Record]) -> BatchResult:
    """Store ``records``; return what was stored and the records that cannot be decoded.

    Raises StoreUnavailableError (retry the whole batch: rows are idempotent on event_id) or
    StoreQueryError when the store rejects data that Python decodes without fault.
    """
    result = BatchResult()
    encoder = store.encoder
    if encoder is None:
        rows = _python_rows(codec, records, result)
    else:
        batch = encoder.encode(codec, records)
        rows = _python_rows(codec, batch.left, result)
        if batch.taken:
            rows += _insert_native(store, codec, batch, result)
    store.insert(rows)  # raises StoreQueryError when the store refuses even these
    result.stored = result.native + len(rows)
    return result


def _python_rows(codec: Codec, records: Sequence[Record], result: BatchResult) -> list[EventRow]:
    """Decode ``records`` in Python; the ones that do not decode go to ``result.rejected``."""
    rows = []
    for record in records:
        try:
            rows.append(to_row(codec.decode(record.value), record.topic, record.partition, record.offset))
        except SchemaError as exc:
            result.rejected.append((record, exc))
    return rows


def _insert_native(store: HistoryStore, codec: Codec, batch: NativeBatch, result: BatchResult) -> list[EventRow]:
    """The batch's Native blocks in one INSERT; set ``result.native``.

    Returns nothing when ClickHouse stored them. The transcoder checked every body, so a refusal
    means the store itself objects (a changed table, a server setting); then Python decodes those
    events and they take the JSON path, which tells whether the data or the store is at fault.
    """
    try:
        store.insert_native(batch.table, batch.structure, batch.block)
    except StoreQueryError as exc:
        result.refused = str(exc)
        return _python_rows(codec, batch.taken, result)
    result.native = len(batch.taken)
    return []
