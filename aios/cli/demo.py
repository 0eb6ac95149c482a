"""``aios demo``: bring the stack up, create topics, run a sample project, show where it all went."""

from __future__ import annotations

import asyncio
import dataclasses

import click

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.cli.projects import show_status
from aios.schemas.errors import AiosError
from aios.schemas.events import event_doc
from aios.streams.readmodels.task_client import Delivered


@click.command()
@click.option("--no-stack", is_flag=True, help="Do not start the local Kafka/Redis.")
@json_option
def demo(no_stack: bool, as_json: bool) -> None:
    """Run a sample project of several tasks through the embedded pipeline."""
    from aios.cli.demo_project import demo_settings, run_demo
    from aios.streams.topics import create_topics

    settings = demo_settings(settings_or_exit())
    try:
        if not no_stack:
            from aios.devstack import up as stack_up

            stack_up(settings)
        create_topics(settings)
        from aios.agents.llm.factory import describe_choice
        from aios.streams.engine.runtime import llm_config

        if not as_json:
            console.print(describe_choice(llm_config(settings)))

        def show(d: Delivered) -> None:
            if not as_json:
                r = d.result
                first = (r["output"] or r["error"] or "").strip().splitlines()
                console.print(f"  [bold]{r['status']}[/bold] {r['task_id'][:8]} "
                              f"results[{d.partition}]@{d.offset}: {first[1] if len(first) > 1 else first[0]}",
                              markup=True, highlight=False)

        report = asyncio.run(run_demo(settings, on_result=show))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json({**dataclasses.asdict(report), "sprint_status": event_doc(report.sprint_status)})
        return
    console.print(f"\nproject {report.project}: {len(report.results)} tasks in {report.seconds}s")
    for r in report.results:
        k = r["kafka"]
        console.print(f"- {r['description']}\n    {r['status']} via {r['provider']}:{r['model']}; "
                      f"Kafka {k['topic']}[{k['partition']}]@{k['offset']}; ClickHouse rows {r['clickhouse_rows']}")
    console.print(f"Redis: {report.redis_key} holds {report.redis_turns} turns")
    by_type = ", ".join(f"{k} {v}" for k, v in report.clickhouse_rows_by_type.items())
    console.print(f"ClickHouse ({report.clickhouse_engine}): {report.clickhouse_rows} rows for the project ({by_type})")
    if report.sprint_status:
        console.print(f"\nA goal planned in sprints (`aios status {report.sprint_project}`):")
        show_status(report.sprint_project, report.sprint_status)
