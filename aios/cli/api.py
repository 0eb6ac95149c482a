"""``aios api``: the REST/WebSocket API and dashboard on AIOS_API_HOST:AIOS_API_PORT."""

from __future__ import annotations

import asyncio

import click

from aios.cli.common import settings_or_exit
from aios.cli.output import err_console
from aios.schemas.errors import AiosError


@click.command("api")
@click.option("--port", type=int, default=None, help="Override AIOS_API_PORT.")
def api_cmd(port: int | None) -> None:
    """Serve the API and the dashboard (the processors run elsewhere: `aios up --no-api`, workers)."""
    # The CLI is the composition edge: it alone reaches up into api/ (lazily, so other commands
    # do not pay for FastAPI's import).
    import uvicorn

    from aios.api.server import uvicorn_config
    from aios.streams.metrics import serve as serve_metrics

    settings = settings_or_exit(api_port=port)
    try:
        config = uvicorn_config(settings)
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    serve_metrics(settings.observability.metrics_port, settings.observability.metrics_host)
    scheme = "https" if settings.api.tls_certfile else "http"
    err_console.print(f"aios: API on {scheme}://{settings.api.host}:{settings.api.port} (dashboard at /); Ctrl-C stops")

    async def serve() -> None:
        server = uvicorn.Server(config)  # handles SIGINT/SIGTERM itself
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise click.ClickException("the API did not start (see the messages above)")
            await asyncio.sleep(0.05)
        err_console.print("aios: ready")
        await task
    asyncio.run(serve())
