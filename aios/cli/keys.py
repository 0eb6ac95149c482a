"""``aios keys create|revoke|list``: API keys, kept in Redis as salted hashes; a key is shown once.
``aios keys new-encryption-key``: a key for AIOS_ENCRYPTION_KEY (restricted content sealed at rest)."""

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


@keys.command("new-encryption-key")
@click.option("--id", "kid", default=None, help="The key's id in the ring (default: k<date>).")
@click.option("--ring", default=None, help="An existing AIOS_ENCRYPTION_KEY to rotate: the new key goes first.")
@json_option
def new_encryption_key(kid: str | None, ring: str | None, as_json: bool) -> None:
    """Print a new AES-256 key as an AIOS_ENCRYPTION_KEY entry (id:base64); nothing is stored."""
    import time

    from aios.schemas.sealed import KeyRing, new_key

    kid = kid or time.strftime("k%Y%m%d")
    value = f"{kid}:{new_key()}" if ring is None else f"{kid}:{new_key()},{ring}"
    try:
        KeyRing.parse(value)  # a clash with an id already in --ring, or a bad --ring, is said now
    except AiosError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        emit_json({"id": kid, "AIOS_ENCRYPTION_KEY": value})
        return
    console.print("AIOS_ENCRYPTION_KEY=" + value, soft_wrap=True)
