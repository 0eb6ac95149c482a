"""Request and response models of the operators' routes (the Kafka view and the DLQ): beside
``models.py``, so the OpenAPI document states them too."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from aios.api.models import ID, Strict
from aios.schemas import limits as L
from aios.streams.orchestration.plan import json_integer

TOPIC = r"^[A-Za-z0-9._-]{1,249}$"  # what Kafka accepts as a topic name


class TopicOut(BaseModel):
    topic: str
    partitions: int
    end_offsets: list[int]
    messages: int = Field(description="Records retention still holds (end minus start offsets).")
    rate_per_s: float | None = Field(description="Records per second since the previous sample.")


class PartitionLagOut(BaseModel):
    topic: str
    partition: int
    committed: int
    end: int
    lag: int


class GroupLagOut(BaseModel):
    group: str
    lag: int
    partitions: list[PartitionLagOut]


class KafkaOut(BaseModel):
    seq: int = Field(description="Samples taken since the API started.")
    at: int | None = Field(description="When the latest sample was taken (epoch ms); null before the first.")
    sample_s: float
    error: str | None = Field(description="Why the latest sample failed, if it did.")
    topics: list[TopicOut]
    groups: list[GroupLagOut]


class LagSeriesOut(BaseModel):
    group: str
    topic: str | None = None
    partition: int | None = None
    lag: list[int | None] = Field(description="One value per sample time; null where the series had none.")


class LagHistoryOut(BaseModel):
    sample_s: float
    window_s: int
    at: list[int]
    series: list[LagSeriesOut]


class LetterOut(BaseModel):
    id: str
    position: str = Field(description="Where the letter sits on the DLQ: topic:partition:offset.")
    timestamp: int
    source_topic: str
    source_partition: int
    source_offset: int
    processor: str
    error_type: str
    reason: str
    errors: list[str]
    key: str | None
    size: int
    preview: str = Field(description="The record's first bytes, as text or as hex.")
    preview_format: Literal["text", "hex"]
    replays: int = Field(description="How often this record (its key and bytes) was replayed.")
    payload_cut: bool


class LettersOut(BaseModel):
    letters: list[LetterOut]
    replay_limit: int


class ReplayIn(Strict):
    """Which letters to send back: ``ids``, or every letter of ``since_s`` (with the filters); one of them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["ids"]},
                                                                           {"required": ["since_s"]}]})

    ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=L.MAX_ID_CHARS)]],
                   Field(min_length=1, max_length=1000)] | SkipJsonSchema[None] = Field(
        None, description="Dead letter ids, as listed.")
    # An integer as JSON Schema means it: 5.0 is one (and so to generated clients), true is not. The
    # bounds come before the validator: after it, inside a union, pydantic writes them into the
    # OpenAPI document as "ge"/"le", which JSON Schema does not know, so clients were not told.
    since_s: Annotated[int, Field(ge=1, le=366 * 86400), BeforeValidator(json_integer)] | SkipJsonSchema[None] = Field(
        None, description="Every letter of this window instead.")
    processor: str | None = Field(None, max_length=L.MAX_ID_CHARS, pattern=ID)
    reason: str | None = Field(None, min_length=1, max_length=L.MAX_REASON_CHARS)
    to: str | None = Field(None, pattern=TOPIC, description="Send here instead of each letter's source topic.")
    dry_run: bool = False

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [k for k in ("ids", "since_s") if k in data and data[k] is None]
            if nulls:
                raise ValueError(f"{' and '.join(nulls)} may not be null: leave the field out instead")
        return data

    @model_validator(mode="after")
    def _ids_or_window(self) -> ReplayIn:
        if (self.ids is None) == (self.since_s is None):
            raise ValueError("choose the letters: give either 'ids' or 'since_s', not both and not neither")
        return self


class OutcomeOut(BaseModel):
    id: str
    outcome: Literal["replayed", "dry_run", "refused"]
    replays: int
    topic: str
    reason: str
    partition: int | None
    offset: int | None
    replay_id: str | None
    source_topic: str
    processor: str


class ReplayOut(BaseModel):
    dry_run: bool
    outcomes: list[OutcomeOut]
    replay_limit: int
