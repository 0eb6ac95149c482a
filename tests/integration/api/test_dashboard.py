"""The dashboard in headless Chromium (Debian's, driven by Playwright; never a downloaded browser):
the page loads, a task submitted through the API appears on the live board and turns succeeded, the
agents and charts render, and a screenshot is saved under test-artifacts/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import async_playwright

from aios.schemas.events import envelope
from aios.streams.kafka import EventProducer
from aios.streams.pipeline import running
from aios.streams.readmodels.task_client import build_task
from aios.streams.settings import Settings
from aios.streams.topics import Topics
from tests.integration.api.helpers import api_client, key_headers, poll

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


async def test_the_kafka_view_charts_a_burst_and_feeds_a_poison_record(settings: Settings) -> None:
    """The lag chart rises while the orchestrator works through a burst and falls back to zero; a
    poison record shows in the DLQ feed with its processor, reason and first bytes; replay works."""
    s = settings.replace(api_kafka_sample_s=0.5)
    topics = Topics.from_settings(s)
    group = f"{s.kafka.topic_prefix}-orchestrator"
    producer = EventProducer(s)
    async with running(s, ["orchestrator"]), api_client(s) as api, async_playwright() as pw:
        headers = await key_headers(api, "operator", ("*",))
        # One task first, so the orchestrator's group has committed and is on the chart before the burst.
        producer.send(topics.tasks, "Task", build_task("warm up", project="burst"), key="burst")
        producer.flush()
        await poll(lambda: api.get("/v1/kafka", headers=headers),
                   lambda r: any(g["group"] == group for g in r.json()["groups"]))
        browser = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1400})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            key = headers["Authorization"].split()[1]
            await page.goto(f"{api.base_url}/#key={key}")
            await page.wait_for_selector(f"#kafka-topics tr[data-topic='{topics.tasks}']", timeout=15_000)
            line = f"#chart-lag polyline[data-group='{group}']"
            await page.wait_for_selector(line, state="attached", timeout=15_000)  # flat at 0: no height yet

            for i in range(1500):
                producer.send(topics.tasks, "Task", build_task(f"burst {i}", project=f"burst-{i % 7}"),
                              key=f"burst-{i % 7}")
            producer.flush()
            await page.wait_for_selector(f"{line}:not([data-peak='0'])", state="attached", timeout=30_000)
            await page.wait_for_function(
                f"() => {{ const l = document.querySelector(\"{line}\"); return +l.dataset.peak >= 100 && l.dataset.last === '0'; }}",
                timeout=120_000)
            assert await page.locator(f"#kafka-lag tr[data-group='{group}']").count() == s.kafka.topic_partitions
            await page.wait_for_selector(f"#kafka-topics tr[data-topic='{topics.tasks}']")  # a sample skips a topic whose leader moves
            ends = await page.inner_text(f"#kafka-topics tr[data-topic='{topics.tasks}'] td:nth-child(3)")
            assert sum(int(x) for x in ends.split("·")) >= 1501  # the warm-up and the burst

            producer.send_raw(topics.tasks, b"\x00\x01poison", key="poison")
            producer.flush()
            row = page.locator("#dlq tbody tr").filter(has_text=topics.tasks).first
            await row.wait_for(timeout=60_000)  # the view reads the whole burst first
            text = await row.inner_text()
            assert "orchestrator" in text and "00 01 70 6f 69 73 6f 6e" in text
            assert (await row.get_attribute("data-reason")) != ""
            await row.locator("button").click()
            await page.wait_for_selector("#dlq td.replay[data-outcome='replayed']", timeout=15_000)
            # The orchestrator fails on the replayed record again: a second letter arrives.
            await page.wait_for_function("() => document.querySelectorAll('#dlq tbody tr').length >= 2",
                                         timeout=30_000)
            # Each agent's live tokens, as the agent worker publishes them. Tokens are live only and
            # not exactly-once: a page whose socket was reopened meanwhile (a loaded machine, the
            # burst) has missed the ones sent while it was closed, so a step is written again, as a
            # next step of the call would be, until the page shows one.
            shown = "() => document.querySelector(\"#tokens [data-agent='worker-7'] pre\")?.textContent" \
                    " === 'hello from the stream'"
            for step in range(6):
                for seq, text in enumerate(("hello ", "from the stream")):
                    producer.send(topics.tokens, "TokenDelta", {
                        **envelope(), "task_id": "t-live", "project_id": "burst-1", "step": step, "seq": seq,
                        "text": text, "done": seq == 1, "agent_id": "worker-7"}, key="t-live")
                producer.flush()
                try:
                    await page.wait_for_function(shown, timeout=10_000)
                    break
                except PlaywrightTimeout:
                    continue
            await page.wait_for_function(shown, timeout=1_000)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.locator("#kafka-panel").screenshot(path=str(ARTIFACTS / "dashboard-kafka.png"))
            assert problems == []
        finally:
            await browser.close()
