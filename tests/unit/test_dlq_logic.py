"""Pure logic of the DLQ tools and the Kafka view: the preview of hostile bytes, the letter filter,
record fingerprints, and the view's rates and lag history from samples."""

from __future__ import annotations

import asyncio
import string

from hypothesis import given
from hypothesis import strategies as st

from aios.api.kafka_live import KafkaMonitor
from aios.api.metrics import KAFKA_SAMPLE_ERRORS
from aios.connectors.context.replays import fingerprint
from aios.streams.errors import KafkaError
from aios.streams.jobs.dlq_replay import CUT_MARK, Letter, LetterFilter, preview
from aios.streams.lag import PartitionLag
from aios.streams.readmodels.kafka_overview import KafkaSample, TopicOffsets
from aios.streams.settings import load_settings


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=128))
def test_a_preview_is_printable_text_or_the_hex_of_the_first_bytes(data: bytes, limit: int) -> None:
    text, form = preview(data, limit)
    if form == "hex":
        assert bytes.fromhex(text) == data[:limit]
    else:
        assert form == "text"
        assert data[:limit].startswith(text.encode())
        assert len(data[:limit]) - len(text.encode()) <= 3  # at most a cut character left out
        assert all(c.isprintable() or c in "\t\n\r" for c in text)


@given(st.text(alphabet=string.printable.replace("\x0b", "").replace("\x0c", ""), max_size=200))
def test_printable_text_is_shown_as_text(text: str) -> None:
    assert preview(text.encode(), 1000) == (text, "text")


def test_a_cut_multibyte_character_still_reads_as_text() -> None:
    data = "héllo wörld ".encode() * 10
    text, form = preview(data, 9)  # cuts inside 'ö'
    assert form == "text" and text == "héllo wörld "[:len(text)]
    assert preview(b"\x1b[31mred", 64)[1] == "hex"  # a terminal escape is not shown as text


@given(st.binary(max_size=20), st.binary(max_size=20), st.binary(max_size=20), st.binary(max_size=20))
def test_fingerprints_tell_records_apart(k1: bytes, p1: bytes, k2: bytes, p2: bytes) -> None:
    same = (k1, p1) == (k2, p2)
    assert (fingerprint(k1, p1) == fingerprint(k2, p2)) == same


def letter(**over: object) -> Letter:
    base: dict[str, object] = dict(event_id="e1", position="aios.dlq:0:1", timestamp_ms=1000, source_topic="aios.tasks",
                                   source_partition=0, source_offset=5, processor="orchestrator",
                                   error_type="SchemaError", error="no magic byte", errors=("no magic byte",),
                                   key=b"k", payload=b"x")
    return Letter(**{**base, **over})  # type: ignore[arg-type]


def test_the_filter_keeps_by_id_time_processor_and_reason() -> None:
    one = letter()
    assert LetterFilter().keeps(one)
    assert LetterFilter(ids=frozenset({"e1"})).keeps(one) and not LetterFilter(ids=frozenset({"e2"})).keeps(one)
    assert LetterFilter(since_ms=1000).keeps(one) and not LetterFilter(since_ms=1001).keeps(one)
    assert not LetterFilter(processor="agents").keeps(one)
    assert LetterFilter(reason="MAGIC").keeps(one) and LetterFilter(reason="schemaerror").keeps(one)
    assert not LetterFilter(reason="timeout").keeps(one)
    assert letter(errors=("x", f"{CUT_MARK} 1000 of 2000 bytes")).cut and not one.cut
    assert letter().fingerprint == letter(event_id="other").fingerprint != letter(payload=b"y").fingerprint


def sample(at_ms: int, end: int, lags: list[tuple[str, int, int]]) -> KafkaSample:
    return KafkaSample(at_ms, (TopicOffsets("p.tasks", (end, 0), (0, 0)),),
                       tuple(PartitionLag(g, "p.tasks", part, end - lag, end, lag) for g, part, lag in lags))


def test_the_view_rates_and_lag_history() -> None:
    monitor = KafkaMonitor(load_settings(api_kafka_sample_s=1, api_kafka_history_s=60))
    assert monitor.snapshot()["at"] is None and monitor.lag_history()["series"] == []
    for s in (sample(0, 10, [("p-a", 0, 5)]), sample(2000, 30, [("p-a", 0, 20), ("p-b", 0, 1), ("p-b", 1, 2)]),
              sample(4000, 30, [("p-b", 0, 0)])):
        monitor._samples.append(s)
    now = monitor.snapshot()
    assert now["topics"] == [{"topic": "p.tasks", "partitions": 2, "end_offsets": [30, 0], "messages": 30,
                              "rate_per_s": 0.0}]
    assert now["groups"] == [{"group": "p-b", "lag": 0, "partitions": [
        {"topic": "p.tasks", "partition": 0, "committed": 30, "end": 30, "lag": 0}]}]
    history = monitor.lag_history()
    assert history["at"] == [0, 2000, 4000]
    assert history["series"] == [{"group": "p-a", "lag": [5, 20, None]}, {"group": "p-b", "lag": [None, 3, 0]}]
    assert monitor.lag_history(since_s=2)["at"] == [2000, 4000]
    parts = monitor.lag_history(group="p-b")["series"]
    assert [(x["partition"], x["lag"]) for x in parts] == [(0, [None, 1, 0]), (1, [None, 2, None])]
    monitor._samples.pop()
    assert monitor.snapshot()["topics"][0]["rate_per_s"] == 10.0  # 20 records in 2 s


def test_the_view_keeps_only_its_window() -> None:
    monitor = KafkaMonitor(load_settings(api_kafka_sample_s=10, api_kafka_history_s=60))
    for i in range(100):
        monitor._samples.append(sample(i * 10_000, i, []))
    assert len(monitor.lag_history()["at"]) == 7  # a minute at one sample per 10 s, and the newest


class FailingOverview:
    """A broker that answers once, then stops answering."""

    def __init__(self) -> None:
        self.calls = 0

    def sample(self) -> KafkaSample:
        self.calls += 1
        if self.calls > 1:
            raise KafkaError("Kafka at 127.0.0.1:1 did not answer: timed out")
        return sample(1000, 5, [("p-a", 0, 2)])


async def test_the_view_keeps_its_samples_and_says_why_when_the_broker_stops_answering() -> None:
    broker = FailingOverview()
    monitor = KafkaMonitor(load_settings(api_kafka_sample_s=0.05), overview=lambda: broker)  # type: ignore[arg-type, return-value]
    errors = KAFKA_SAMPLE_ERRORS._value.get()
    monitor.start()
    try:
        for _ in range(100):
            if broker.calls >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(monitor.close)
    now = monitor.snapshot()
    assert now["error"] == "Kafka at 127.0.0.1:1 did not answer: timed out"
    assert now["seq"] == 1 and now["groups"][0]["lag"] == 2  # the last good sample is still shown
    assert KAFKA_SAMPLE_ERRORS._value.get() >= errors + 2
