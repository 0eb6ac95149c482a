"""The local Redis server (Debian's redis-server), started daemonized under the data directory."""

from __future__ import annotations

import subprocess

import redis

from aios.devstack.processes import Layout, tail
from aios.streams.errors import StackError
from aios.streams.settings import Settings

REDIS_MARKER = "redis"


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(settings: Settings, layout: Layout, redis_server: str) -> None:
    redis_dir, pidfile, log = layout.root / "redis", layout.file("redis", "pid"), layout.file("redis", "log")
    redis_dir.mkdir(parents=True, exist_ok=True)
    argv = [redis_server, "--port", str(settings.stores.redis_port), "--bind", "127.0.0.1", "--dir", str(redis_dir)]
    argv += ["--daemonize", "yes", "--pidfile", str(pidfile), "--logfile", str(log), "--save", ""]
    argv += ["--appendonly", "no"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)  # noqa: S603
    if out.returncode != 0:
        raise StackError(
            f"redis-server exited with {out.returncode}: {(out.stdout + out.stderr).strip()}\n{tail(log)}"
        )
