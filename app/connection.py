"""The Redis client: from REDIS_URL, REDIS_CLUSTER_URL, or the embedded server."""

import functools
from collections.abc import Callable

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from . import embedded
from .config import Settings


def connect(settings: Settings) -> redis.Redis | RedisCluster:
    """A client whose every call gives up within REDIS_TIMEOUT seconds.

    A dropped connection (Redis restarted) is retried once at once on a fresh
    one; a timeout is not retried, so a hung Redis costs one timeout, not three.
    """
    options = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        "health_check_interval": 30,
    }
    if settings.redis_cluster_url:
        return RedisCluster.from_url(settings.redis_cluster_url, decode_responses=True, **options)
    return redis.Redis.from_url(server_url(settings), decode_responses=True, **options)


def server_url(settings: Settings) -> str:
    """REDIS_URL, or the embedded server's (started if none runs)."""
    return settings.redis_url or embedded.ensure_server(settings.embedded_redis_dir)


def loop_connector(settings: Settings) -> Callable[[], redis.asyncio.Connection] | None:
    """What makes the asyncio connection of a worker's loop (app/store/pipeline.py)
    to the server connect() reaches, with its timeouts; None for a cluster."""
    if settings.redis_cluster_url:
        return None
    return functools.partial(loop_connection, settings)


def loop_connection(settings: Settings) -> redis.asyncio.Connection:
    """An asyncio connection, not yet open; it fails rather than retries, as its
    caller retries a dropped connection once."""
    pool = redis.asyncio.ConnectionPool.from_url(
        server_url(settings),
        decode_responses=True,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
    )
    return pool.make_connection()
