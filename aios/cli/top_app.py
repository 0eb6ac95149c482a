"""The textual application behind ``aios top``: five tables refreshed from a TopFeed's snapshots;
keys cycle the project and role filters."""

from __future__ import annotations

from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Static

from aios.schemas.events import now_ms
from aios.streams.readmodels.top import Snapshot, TopFeed


def _cycle(current: str | None, options: list[str]) -> str | None:
    """None (all) -> first -> … -> last -> None."""
    if not options:
        return None
    if current not in options:
        return options[0]
    i = options.index(current)
    return options[i + 1] if i + 1 < len(options) else None


class TopApp(App[None]):
    CSS = """
    DataTable { height: auto; max-height: 12; margin-bottom: 1; }
    #filters { height: 1; color: $accent; }
    Horizontal { height: auto; }
    Horizontal > DataTable { width: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "next_project", "project"), Binding("r", "next_role", "role"),
        Binding("a", "clear", "all"), Binding("q", "quit", "quit")]

    def __init__(self, feed: TopFeed, *, project: str | None, role: str | None, refresh_s: float, title: str) -> None:
        super().__init__()
        self.feed = feed
        self.project = project
        self.role = role
        self.refresh_s = refresh_s
        self.title = title
        self._seen_projects: list[str] = []
        self._seen_roles: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        yield Static(id="filters")
        yield DataTable(id="agents", cursor_type="none")
        yield DataTable(id="roles", cursor_type="none")
        yield DataTable(id="projects", cursor_type="none")
        with Horizontal():
            yield DataTable(id="lag", cursor_type="none")
            yield DataTable(id="dlq", cursor_type="none")
        yield Footer()

    def on_mount(self) -> None:
        columns = {
            "agents": ("agent", "state", "roles", "in flight", "last heartbeat"),
            "roles": ("role", "in flight", "done/s", "succeeded", "failed"),
            "projects": ("project", "state", "done", "cost USD", "counts"),
            "lag": ("consumer group", "lag"),
            "dlq": ("dead letter", "processor", "source", "error"),
        }
        for table_id, names in columns.items():
            self.query_one(f"#{table_id}", DataTable).add_columns(*names)
        self.update()
        self.set_interval(self.refresh_s, self.update)

    def update(self) -> None:
        snap = self.feed.snapshot(project=self.project, role=self.role)
        everything = self.feed.snapshot()
        self._seen_projects = [p["project_id"] for p in everything.projects]
        self._seen_roles = [r.role for r in everything.roles] or sorted({r for a in everything.agents for r in a["roles"]})
        status = "reading the topics…" if not snap.caught_up else "live"
        if snap.error:
            status = f"stopped: {snap.error}"
        self.query_one("#filters", Static).update(
            f"project: {self.project or 'all'} · role: {self.role or 'all'} · {status}")
        self._fill(snap)

    def _fill(self, snap: Snapshot) -> None:
        now = now_ms()
        rows: dict[str, list[tuple[str, ...]]] = {
            "agents": [(a["agent_id"], a["state"], ",".join(a["roles"]), str(a["in_flight"]),
                        f"{a['last_heartbeat_s']}s ago") for a in snap.agents],
            "roles": [(r.role, str(r.in_flight), f"{r.done_per_s:g}", str(r.succeeded), str(r.failed))
                      for r in snap.roles],
            "projects": [(p["project_id"], p["state"], f"{p['percent_done']:.0f}%", f"{p['cost_usd']:.4f}",
                          " ".join(f"{k} {v}" for k, v in p["counts"].items() if v)) for p in snap.projects],
            "lag": [(group, str(lag)) for group, lag in snap.lag.items()],
            "dlq": [(f"{(now - d['at_ms']) / 1000:.0f}s ago", d["processor"], d["source"],
                     f"{d['error_type']}: {d['error']}"[:80]) for d in snap.dead_letters],
        }
        for table_id, table_rows in rows.items():
            table = self.query_one(f"#{table_id}", DataTable)
            table.clear()
            table.add_rows(table_rows)

    def action_next_project(self) -> None:
        self.project = _cycle(self.project, self._seen_projects)
        self.update()

    def action_next_role(self) -> None:
        self.role = _cycle(self.role, self._seen_roles)
        self.update()

    def action_clear(self) -> None:
        self.project = self.role = None
        self.update()
