# SPDX-License-Identifier: MIT
"""What the Redis commands share: the server's URL, the stream options, the production."""

from __future__ import annotations

import argparse
import os
from typing import Any

from echo_actors.cli._common import CommandError
from echo_actors.fate import Fate

__all__ = ["REDIS_URL_ENV", "add_stream_options", "open_production", "redis_url"]

REDIS_URL_ENV = "ECHO_REDIS_URL"
"""The environment variable that names the Redis server when ``--redis`` is not given."""


def redis_url(given: str | None) -> str:
    """``given``, else ``$ECHO_REDIS_URL``.

    Raises:
        CommandError: neither is set.
    """
    url = given or os.environ.get(REDIS_URL_ENV)
    if not url:
        raise CommandError(f"no Redis server: pass --redis URL or set {REDIS_URL_ENV}")
    return url


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    """``--redis``, ``--stream``, ``--group`` and ``--config``, as every Redis command takes."""
    parser.add_argument("--redis", metavar="URL",
                        help=f"redis:// URL of the server (default: ${REDIS_URL_ENV})")
    parser.add_argument("--stream", default="echo", help="stream name (default: echo)")
    parser.add_argument("--group", default="echo", help="consumer group (default: echo)")
    parser.add_argument("--config", metavar="TOML", help="a Fate file ([echo] table or top level)")
    parser.add_argument("--cluster", action="store_true",
                        help="the server is a node of a Redis Cluster (the production's keys "
                        "share the stream's hash slot)")


def open_production(args: argparse.Namespace, fate: Fate, **options: Any) -> Any:
    """A RedisProduction on the stream the options name.

    Raises:
        CommandError: redis-py is not installed, or no server is named.
    """
    url = redis_url(args.redis)
    try:
        from echo_actors.production.redis import RedisProduction  # noqa: PLC0415 - optional
    except ImportError:
        raise CommandError("the Redis commands need redis-py: "
                           "pip install 'echo_actors[redis]'") from None
    settings: dict[str, Any] = {"stream": args.stream, "group": args.group, "fate": fate,
                                "cluster": args.cluster, **options}
    return RedisProduction(url, **settings)
