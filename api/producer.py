"""An asyncio face on the idempotent confluent-kafka producer: ``await send(...)`` returns once acked.

One background thread serves delivery callbacks, so many requests share librdkafka's batches and
none blocks the event loop. A 202 is only returned after the broker acknowledged (acks=all).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from aios.schemas.checks import check
from aios.schemas.codec import Codec
from aios.streams.errors import KafkaError
from aios.streams.kafka import make_codec, producer_config
from aios.streams.settings import Settings
from aios.streams.tracing import headers_for


class AsyncProducer:
    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        # Events are built here from request bodies pydantic already validated: skip re-validation
        # on encode, as the processors do (it was a tenth of a request's CPU time).
        self.codec = codec or make_codec(settings, validate=False)
        self._producer = Producer(producer_config(settings))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="aios-api-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, topic: str, record: str, value: Mapping[str, Any], key: str) -> tuple[int, int]:
        """Produce one event and wait for its acknowledgement; return (partition, offset).

        The event is checked against the limits the processors check it against first: what the API
        produces, they accept (InvalidRecordError, a 400, otherwise)."""
        check(record, value)
        data = self.codec.encode(record, value, topic)
        headers = headers_for(value)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()

        def settle(err: Any, msg: Message) -> None:
            def resolve() -> None:
                if future.done():
                    return
                if err is not None:
                    future.set_exception(KafkaError(f"delivery to {topic} failed: {err}"))
                else:
                    future.set_result((int(msg.partition() or 0), int(msg.offset() or 0)))
            loop.call_soon_threadsafe(resolve)

        while True:
            try:
                self._producer.produce(topic, value=data, key=key, headers=headers, on_delivery=settle)
                break
            except BufferError:
                await asyncio.sleep(0.01)  # librdkafka's queue is full: let the poll thread drain it
            except KafkaException as exc:
                raise KafkaError(f"produce to {topic} failed: {exc}") from exc
        return await future

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=5)
