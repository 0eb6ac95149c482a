"""Broadcasts every agent worker acts on, from the control topic (``streams/engine/control.py``):

- ``drain``: stop taking assignments, finish those in flight (up to AIOS_DRAIN_TIMEOUT_S), commit,
  say ``stopped`` and exit cleanly, as on SIGTERM. Its partitions go to the other workers of the
  group; a supervisor (``aios up``, Kubernetes) starts a fresh worker, so a drain of every worker
  is a rolling restart. ``target`` names one worker by its agent id; none drains them all.
- ``reload``: read the roles (``agents/roles.json``) or the LLM config (``AIOS_LLM_CONFIG``:
  deployments, limits, models) again. The new one is built and checked first; a broken file is
  logged and the old one kept. Assignments in flight finish on what they started with.

A broadcast is a Control event of the project ``BROADCAST_PROJECT``; the orchestrator, which
owns the topic, has no such project and ignores it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aios.agents.roles import load_roles
from aios.agents.runner import system_prompt
from aios.schemas.errors import AiosError, ConfigError
from aios.schemas.events import envelope
from aios.streams.engine.control import ControlListener
from aios.streams.engine.records import log
from aios.streams.engine.runtime import Runtime
from aios.streams.metrics import CONTROL_BROADCASTS

BROADCAST_PROJECT = "_workers"  # the project id a broadcast carries (an id no project is given by AIOS)
RELOADABLE = ("roles", "llm")
ROUTER_PARTS = ("llm_file", "catalogue", "router")  # the runtime's cached objects built from AIOS_LLM_CONFIG


def broadcast_event(action: str, target: str | None, reason: str, requested_by: str) -> dict[str, Any]:
    """A drain or reload broadcast; raise ``ConfigError`` naming what to fix for a bad one."""
    if action not in ("drain", "reload"):
        raise ConfigError(f"{action!r} is not a broadcast; use drain or reload")
    if action == "reload" and target not in (None, *RELOADABLE):
        raise ConfigError(f"cannot reload {target!r}: reload one of {', '.join(RELOADABLE)}, or all of them")
    return {**envelope(), "project_id": BROADCAST_PROJECT, "action": action, "task_id": None,
            "reason": reason, "requested_by": requested_by, "target": target}


class Broadcasts:
    """One agent worker's handlers of drain and reload."""

    def __init__(self, rt: Runtime, listener: ControlListener, begin_drain: Any) -> None:
        self.rt = rt
        self._begin_drain = begin_drain  # stops taking assignments at once, says draining
        self._closing: set[asyncio.Task[None]] = set()
        listener.on("drain", self.on_drain)
        listener.on("reload", self.on_reload)

    def on_drain(self, event: dict[str, Any]) -> None:
        target = event.get("target")
        if target not in (None, self.rt.agent_id):
            CONTROL_BROADCASTS.labels("drain", "ignored").inc()
            return
        log.warning("agents: draining on request of %s (%s)", event.get("requested_by"), event.get("reason") or "-")
        self._begin_drain()
        self.rt.stop_requested.set()  # the process leaves its loop; its clean stop finishes the drain
        CONTROL_BROADCASTS.labels("drain", "done").inc()

    def on_reload(self, event: dict[str, Any]) -> None:
        target = event.get("target")
        for what in RELOADABLE if target is None else (target,):
            try:
                if what == "roles":
                    self.reload_roles()
                elif what == "llm":
                    self.reload_llm()
                else:
                    raise ConfigError(f"cannot reload {what!r}; one of {', '.join(RELOADABLE)}")
            except AiosError as exc:
                log.error("agents: reload of %s refused, keeping the one in use: %s", what, exc)
                CONTROL_BROADCASTS.labels("reload", "failed").inc()
                continue
            log.warning("agents: %s reloaded on request of %s", what, event.get("requested_by"))
            CONTROL_BROADCASTS.labels("reload", "done").inc()

    def reload_roles(self) -> None:
        load_roles.__wrapped__()  # read and checked before the cached one is dropped
        load_roles.cache_clear()
        system_prompt.cache_clear()
        load_roles()

    def reload_llm(self) -> None:
        rt = self.rt
        old = {part: rt.__dict__.pop(part) for part in ROUTER_PARTS if part in rt.__dict__}
        try:
            rt.router  # noqa: B018 - built (the file read and checked) now, not by the next assignment
        except Exception:
            for part in ROUTER_PARTS:
                rt.__dict__.pop(part, None)
            rt.__dict__.update(old)
            raise
        previous = old.get("router")
        if previous is not None:  # calls in flight still use it: closed once they can have finished
            task = asyncio.get_running_loop().create_task(self._close_later(previous))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_later(self, router: Any) -> None:
        llm = self.rt.settings.llm
        await asyncio.sleep(llm.timeout_s * (llm.max_retries + 1) + 5)
        for deployment in router.deployments:
            await deployment.provider.aclose()
