"""A batch's events as ClickHouse Native blocks, through the ``aios_transcoder`` extension (Rust).

The extension is built from ``connectors/history/transcoder`` by ``make install``. Without it the
sink still works: every event is decoded in Python (about twenty times slower), and the store says
so in its log when it is set up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aios.connectors.history.ingest import KAFKA_COLUMNS, IngestTable
from aios.schemas.codec import SINGLE_OBJECT_MAGIC, Codec
from aios.schemas.errors import SchemaError

try:
    import aios_transcoder
except ImportError:  # pragma: no cover - the Makefile builds it; tests run with it
    AVAILABLE = False
else:
    AVAILABLE = True


class KafkaRecord(Protocol):
    """What the transcoder reads of a record (the writer's ``Record``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class NativeBatch:
    block: bytes  # Native blocks, one per record type, of ``table``'s columns
    table: str
    structure: str  # ``table``'s columns, which the INSERT reads the blocks as
    taken: Sequence[Any]  # the records in ``block``
    left: list[Any]  # the records Python decodes: framing or body the transcoder does not take


class NativeEncoder:
    """Turns records whose writer is the current schema of a mapped record type into Native blocks.

    The transcoder knows each current schema's single-object header from the start. A registry
    schema id it learns once Python has resolved it through the codec: the first batch with a new
    id is transcoded again once its header is learned.
    """

    def __init__(self, tables: Mapping[str, IngestTable]) -> None:
        if not AVAILABLE:
            raise RuntimeError("the aios_transcoder extension is not installed: run `make install`")
        if len({t.table for t in tables.values()}) != 1:
            raise ValueError(f"the record types {sorted(tables)} must share exactly one ingest table "
                             f"(they use {sorted({t.table for t in tables.values()})})")
        self._tables = dict(tables)
        self._plans = {name: i for i, name in enumerate(self._tables)}
        first = next(iter(self._tables.values()))
        self.table, self.structure = first.table, first.structure
        self._transcoder = aios_transcoder.Transcoder(
            [name for name, _ in KAFKA_COLUMNS],
            [(t.event_type, list(t.fields)) for t in self._tables.values()])
        for name, table in self._tables.items():  # single-object headers are known up front
            self._transcoder.learn(SINGLE_OBJECT_MAGIC + table.fingerprint, self._plans[name])

    def encode(self, codec: Codec, records: Sequence[KafkaRecord]) -> NativeBatch:
        batch = records if isinstance(records, list) else list(records)
        block, _, left_at, unknown = self._transcoder.transcode(batch)
        taken, left = self._split(batch, left_at)
        if any([self._learn(codec, header, batch[at].value) for header, at in unknown]):
            more, _, still_at, _ = self._transcoder.transcode(left)  # the events left out, again
            block += more  # a Native stream is a run of blocks
            more_taken, left = self._split(left, still_at)
            taken = [*taken, *more_taken]
        return NativeBatch(block, self.table, self.structure, taken, left)

    @staticmethod
    def _split(batch: list[Any], left_at: list[int]) -> tuple[Sequence[Any], list[Any]]:
        if not left_at:
            return batch, []
        out = set(left_at)
        return [r for i, r in enumerate(batch) if i not in out], [batch[i] for i in left_at]

    def _learn(self, codec: Codec, header: bytes, value: bytes | None) -> bool:
        """Teach the transcoder ``header`` (of ``value``) if its writer is a mapped current schema."""
        try:
            writer, _, _ = codec.frame(value)
        except SchemaError:
            return False  # Python rejects the event with the codec's reason
        table = self._tables.get(writer.name)
        if table is None or table.fingerprint != writer.fingerprint:
            return False  # a writer only Python reads
        self._transcoder.learn(header, self._plans[writer.name])
        return True
