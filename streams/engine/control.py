"""Broadcasts on the control topic, heard by every worker that listens.

The orchestrator consumes ``<prefix>.control`` in its group, one owner per project. Workers that
must also act on a control event (an agent working on a task that is cancelled) read every
partition of it directly, from its end, with no consumer group and no commits: each of them sees
every event published while it runs, and nothing from before it started. Handlers register per
action (``cancel``; the ``drain`` and ``reload`` broadcasts of ``streams/processors/agent_control.py``)
and run on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from aios.schemas.errors import SchemaError
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.engine.tail import TopicTail

ControlHandler = Callable[[dict[str, Any]], None]


class ControlListener(TopicTail):
    """Reads the control topic from its end on every partition, and hands each event to the
    handlers of its action."""

    name = "control"

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(rt, rt.topics.control, "control events", **kwargs)
        self.handlers: dict[str, list[ControlHandler]] = {}

    def on(self, action: str, handler: ControlHandler) -> None:
        """Call ``handler(event)`` for each control event with ``action`` (on the event loop)."""
        self.handlers.setdefault(action, []).append(handler)

    def handle(self, msg: Message) -> None:
        try:
            event = self.rt.codec.decode(msg.value(), expect="Control").value
        except SchemaError:
            return  # the orchestrator owns this topic and dead-letters what it cannot read
        if self._loop is not None and event.get("action") in self.handlers:
            self._loop.call_soon_threadsafe(self._dispatch, event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        for handler in self.handlers.get(str(event["action"]), ()):
            try:
                handler(event)
            except Exception:  # a handler's bug must not stop the others, nor the listener
                log.exception("control listener: the %s handler failed", event["action"])
