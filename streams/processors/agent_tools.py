"""The tools an assignment's model is offered: the read-only tools (AIOS_AGENT_TOOLS) and the remote
A2A agents configured for its role (AIOS_A2A_AGENTS). A restricted task is never offered a remote
agent: its content stays on local models, and a remote agent is not one."""

from __future__ import annotations

from aios.agents.tools import Tool, Toolbox, read_only_tools
from aios.streams.metrics import A2A_REMOTE_CALLS, A2A_REMOTE_SECONDS
from aios.streams.sealing import is_restricted
from aios.streams.settings import Settings


def _observe(agent: str, outcome: str, seconds: float) -> None:
    A2A_REMOTE_CALLS.labels(agent, outcome).inc()
    A2A_REMOTE_SECONDS.labels(agent).observe(seconds)


class RoleTools:
    """Toolboxes by role, built once per worker (a remote agent's client is reused across tasks)."""

    def __init__(self, settings: Settings) -> None:
        self.read_only = read_only_tools() if settings.llm.agent_tools else Toolbox([])
        self._remote: dict[str, list[Tool]] = {role: [] for role in settings.processing.roles}
        if settings.llm.a2a_agents:
            from aios.agents.tools_a2a import AskRemoteAgent, RemoteAgent

            for name, cfg in settings.llm.a2a_agents.items():
                tool = AskRemoteAgent(RemoteAgent(name, cfg.url, cfg.token.get_secret_value() if cfg.token else None,
                                                  cfg.timeout_s, cfg.description), observe=_observe)
                for role in cfg.roles or settings.processing.roles:
                    self._remote.setdefault(role, []).append(tool)
        self._boxes = {role: self.read_only.extended(tools) for role, tools in self._remote.items() if tools}

    def remote_for(self, role: str, privacy: str | None) -> list[Tool]:
        """The remote agents ``role`` may ask, none for a restricted task."""
        return [] if is_restricted(privacy) else list(self._remote.get(role, []))

    def for_task(self, role: str, privacy: str | None) -> Toolbox | None:
        """The toolbox of an assignment of ``role``; None when it has no tool at all."""
        box = self.read_only if is_restricted(privacy) else self._boxes.get(role, self.read_only)
        return box if box.specs() else None
