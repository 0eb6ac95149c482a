"""``aios up`` (every processor group as its own supervised process), ``aios worker NAME`` (one
processor, distributed mode) and ``aios serve STORE`` (the owner of an embedded store)."""

from __future__ import annotations

import faulthandler
import signal
import sys

import click

from aios.cli.common import settings_or_exit
from aios.cli.output import err_console
from aios.schemas.errors import AiosError
from aios.streams.pipeline import check_processors, run_forever
from aios.streams.processors import PROCESSORS
from aios.streams.settings import Settings


def say(line: str) -> None:
    """A status line on stderr, unwrapped (supervisors and benches wait for ``aios: ready``)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@click.command()
@click.option("--no-stack", is_flag=True, help="Do not start the local Kafka/Redis (use what settings point at).")
@click.option("--no-api", is_flag=True, help="Do not serve the API and dashboard (AIOS_API_PORT).")
def up(no_stack: bool, no_api: bool) -> None:
    """Run every processor group as its own supervised process (embedded mode), starting the local stack if needed.

    Crashed processes are restarted with backoff; SIGTERM or Ctrl-C drains them all within
    AIOS_DRAIN_TIMEOUT_S. `aios logs` reads their logs; /metrics on AIOS_METRICS_PORT merges theirs.
    """
    from aios.devstack.supervisor import Supervisor, plan

    settings = settings_or_exit(process="supervisor")
    if not no_stack:
        from aios.devstack import up as stack_up
        from aios.streams.topics import create_topics

        try:
            stack_up(settings)
            create_topics(settings)
        except AiosError as exc:
            raise click.ClickException(str(exc)) from exc
    specs = plan(settings, api=not no_api and settings.api.port != 0)
    supervisor = Supervisor(settings, specs, terminal=say)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: supervisor.request_stop())
    say(f"aios: starting {len(specs)} processes under prefix {settings.kafka.topic_prefix}"
        + (f"; API on {settings.api.host}:{settings.api.port}" if any(s.name == "api" for s in specs) else "")
        + "; Ctrl-C stops")
    code = supervisor.run()
    if code:
        raise SystemExit(code)


def _run(settings: Settings, processors: list[str], name: str) -> None:
    # `kill -USR1 PID` writes every thread's stack to stderr (the process's log) and carries on: how
    # to see where a processor that stopped making progress is waiting, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    err_console.print(f"aios: running {', '.join(processors)} as group {settings.kafka.topic_prefix}-{name}; Ctrl-C stops")
    try:
        run_forever(settings, processors, name, on_ready=lambda: say("aios: ready"))
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.argument("name", type=click.Choice(list(PROCESSORS)))
@click.option("--role", "roles", multiple=True, help="For `agents`: the role(s) this worker serves.")
def worker(name: str, roles: tuple[str, ...]) -> None:
    """Run one processor as its own consumer group (distributed mode).

    `kill -USR1 PID` writes every thread's stack to its stderr and leaves it running: where a processor
    that stopped making progress waits.
    """
    settings = settings_or_exit(process=name, roles=",".join(roles) if roles else None)
    check_processors([name])
    # Each role's workers form their own group, so roles scale independently.
    group = f"{name}-{'-'.join(settings.processing.roles)}" if name == "agents" else name
    _run(settings, [name], group)


@click.command()
@click.argument("store", type=click.Choice(["clickhouse", "qdrant"]))
def serve(store: str) -> None:
    """Serve AIOS_DATA_DIR's embedded store on loopback, in its own protocol (`aios up` runs these).

    clickhouse: the chdb data directory as a ClickHouse server (HTTP on AIOS_CLICKHOUSE_HTTP_PORT,
    native on AIOS_CLICKHOUSE_TCP_PORT). qdrant: the local Qdrant folder over Qdrant's REST API on
    AIOS_QDRANT_LOCAL_PORT. Other local processes find the owner and use its address.
    """
    settings = settings_or_exit(process=store)

    def ready(url: str) -> None:
        say(f"aios: ready: {store} serves {settings.stores.data_dir} at {url}")

    try:
        if store == "clickhouse":
            from aios.devstack.clickhouse_owner import serve_clickhouse

            serve_clickhouse(settings, ready)
        else:
            from aios.devstack.qdrant_owner import serve_qdrant

            serve_qdrant(settings, ready)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
