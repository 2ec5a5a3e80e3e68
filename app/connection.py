"""The Redis client: from REDIS_URL, REDIS_CLUSTER_URL, or the embedded server."""

import redis
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
        "decode_responses": True,
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        "health_check_interval": 30,
    }
    if settings.redis_cluster_url:
        return RedisCluster.from_url(settings.redis_cluster_url, **options)
    url = settings.redis_url or embedded.ensure_server(settings.embedded_redis_dir)
    return redis.Redis.from_url(url, **options)
