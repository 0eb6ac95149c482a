"""``aios keys create|revoke|list``: API keys, kept in Redis as salted hashes; a key is shown once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from aios.cli.common import settings_or_exit
from aios.cli.output import console, emit_json, json_option
from aios.schemas.errors import AiosError

T = TypeVar("T")
ROLES = ("admin", "operator", "submitter", "viewer")


def _with_store(call: Callable[[Any], Awaitable[T]]) -> T:
    import redis.asyncio as aioredis

    from aios.api.keys import ApiKeys  # the CLI is the edge that composes api/ with streams/
    from aios.connectors.context.keys import KeyStore

    settings = settings_or_exit()

    async def run() -> T:
        client = aioredis.Redis.from_url(settings.stores.redis_url, socket_timeout=5)
        try:
            return await call(ApiKeys(KeyStore(client, settings.kafka.topic_prefix)))
        except aioredis.RedisError as exc:
            raise click.ClickException(f"Redis at {settings.stores.redis_url}: {exc}") from exc
        except (AiosError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            await client.aclose()
    return asyncio.run(run())


@click.group()
def keys() -> None:
    """API keys for the REST API, the WebSocket and the dashboard."""


@keys.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the key may do.")
@click.option("--project", "projects", multiple=True, required=True,
              help="A project the key may touch (repeatable); '*' for every project.")
@click.option("--name", default="", help="A label to recognise the key by in `aios keys list`.")
@json_option
def create(role: str, projects: tuple[str, ...], name: str, as_json: bool) -> None:
    """Create a key and print it once: only its salted hash is stored."""
    from aios.api.keys import key_doc

    key, info = _with_store(lambda store: store.create(role, list(projects), name))
    if as_json:
        emit_json({**key_doc(info), "key": key})
        return
    console.print(f"key {info.id} ({info.role} on {', '.join(info.projects)}); store it now, it is not shown again:")
    console.print(key)


@keys.command("revoke")
@click.argument("key_id")
@json_option
def revoke(key_id: str, as_json: bool) -> None:
    """Revoke a key: the next request with it gets 401."""
    from aios.api.keys import key_doc

    info = _with_store(lambda store: store.revoke(key_id))
    if as_json:
        emit_json(key_doc(info))
        return
    console.print(f"revoked key {info.id}")


@keys.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Every key's id, role, projects and state (never the key)."""
    from aios.api.keys import key_doc

    infos = _with_store(lambda store: store.list())
    if as_json:
        emit_json({"keys": [key_doc(i) for i in infos]})
        return
    for i in infos:
        console.print(f"{i.id}  {i.role:9}  {','.join(i.projects)}  {'revoked' if i.revoked else 'active'}  {i.name}")
