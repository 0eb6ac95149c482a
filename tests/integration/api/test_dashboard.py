"""The dashboard in headless Chromium (Debian's, driven by Playwright; never a downloaded browser):
the page loads, a task submitted through the API appears on the live board and turns succeeded, the
agents and charts render, and a screenshot is saved under test-artifacts/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from aios.schemas.events import envelope
from aios.streams.kafka import EventProducer
from aios.streams.pipeline import running
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.api.helpers import api_client, key_headers

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is missing: run infra/install-system.sh (apt-get install chromium)")
    return path


async def test_a_task_appears_on_the_board_and_turns_succeeded(settings: Settings) -> None:
    producer = EventProducer(settings)
    producer.send(Topics.from_settings(settings).agents, "AgentStatus", {
        **envelope(), "agent_id": "worker-1", "role": "general", "state": "ready", "in_flight": [],
        "version": "0.1.0", "host": "h", "heartbeat_interval_ms": 5000}, key="worker-1")
    producer.flush()
    async with running(settings, ["orchestrator", "results", "agents", "history"]) as live, \
            api_client(settings, store=lambda: live.runtime.store) as api, async_playwright() as pw:
        headers = await key_headers(api, "operator", ("*",))
        browser = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            key = headers["Authorization"].split()[1]
            await page.goto(f"{api.base_url}/#key={key}")
            await page.wait_for_selector("#conn[data-state='live']", timeout=15_000)
            assert key not in page.url  # the key leaves the address bar at once
            await page.wait_for_selector("#agents tbody tr", timeout=10_000)
            assert "worker-1" in await page.inner_text("#agents")

            r = await api.post("/v1/tasks", json={"description": "draw the board", "project": "web"}, headers=headers)
            assert r.status_code == 202
            node = f"g.node[data-task-id='{r.json()['task_id']}']"
            await page.wait_for_selector(node, timeout=15_000)
            await page.wait_for_selector(f"{node}[data-state='succeeded']", timeout=60_000)
            await page.wait_for_selector("#projects li[data-project='web']")

            plan = {"project": "site", "tasks": [{"id": "design", "role": "general", "description": "d"},
                                                 {"id": "build", "role": "general", "description": "b",
                                                  "depends_on": ["design"]}]}
            assert (await api.post("/v1/projects", json=plan, headers=headers)).status_code == 202
            await page.wait_for_selector("div.project[data-project='site'] g.node[data-task-id='build']"
                                         "[data-state='succeeded']", timeout=60_000)
            assert await page.locator("div.project[data-project='site'] path.edge").count() == 1
            # The charts poll /v1/stats every 5 s; the history sink stores results within a second.
            await page.wait_for_function(
                "() => /· [1-9][0-9]* results/.test(document.querySelector('#stats-window').textContent)",
                timeout=30_000)
            await page.wait_for_selector("#chart-latency rect.bar[height]:not([height='0'])", timeout=15_000)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert problems == []
        finally:
            await browser.close()
