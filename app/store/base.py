"""StoreBase: the Redis client, the loaded scripts, and Redis errors as 503."""

from __future__ import annotations

import asyncio
import re
import threading
from importlib import resources

import hiredis
import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)

from .. import pid, portal
from ..config import Settings
from ..errors import StoreUnavailable
from .pipeline import LoopPipeline

# Replies that mean "not now" rather than "wrong", also when a script relays them.
TRANSIENT_REPLY = re.compile(r"(^|-)(OOM|MASTERDOWN|LOADING|BUSY|NOREPLICAS|READONLY)\b")
TRANSIENT_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    OutOfMemoryError,
)
SCRIPTS = (
    "ingest_batch",
    "prune_step",
    "drop_stream",
    "request_snapshot",
    "reset_checkpoint",
    "read_changes",
)


class StoreBase:
    """What every part of the Store shares: client, settings, scripts."""

    def __init__(self, client, settings: Settings, loop_connector=None):
        self.client = client
        # RedisCluster's isinstance check goes through typing's protocol machinery,
        # thousands of instructions: asked once, not several times per request.
        self.is_cluster = isinstance(client, RedisCluster)
        # Makes the asyncio connection of a worker's loop; None: every call blocks.
        self.loop_connector = loop_connector
        self.prefix = settings.key_prefix
        self.snapshot_on_suggest = "1" if settings.snapshot_on_suggest else "0"
        self.snapshot_end = "2" if settings.snapshot_prune else "1"
        self.change_feed_maxlen = str(settings.change_feed_maxlen)  # '0': no feed
        self.row_meta_every_row = "1" if settings.row_meta_every_row else "0"
        self._listed_at: dict[str, int] = {}  # stream tag -> when this process listed it
        self.wait_replicas = settings.wait_replicas
        self.wait_timeout_ms = settings.wait_timeout_ms
        self.memory_high_watermark = settings.memory_high_watermark
        self._memory_checked: dict[str, tuple[float, bool]] = {}  # node -> (when, above)
        self._own = threading.local()  # this thread's client with a connection of its own
        self._pipeline: tuple[object, LoopPipeline] | None = None  # (its loop, it)
        lua = resources.files("app") / "lua"
        for name in SCRIPTS:
            script = (lua / f"{name}.lua").read_text(encoding="utf-8")
            setattr(self, name, client.register_script(script))

    def _node(self, key: str) -> tuple[str, redis.Redis]:
        """(name, client) of the server holding `key`: the one server, or a cluster master."""
        if not self.is_cluster:
            return "", self.client
        node = self.client.get_node_from_key(key)
        return node.name, self.client.get_redis_connection(node)

    def _thread_client(self):
        """A client that keeps one pool connection for the calling thread.

        The request path's commands go through it: a pooled call takes a lock, checks
        the pid and polls the socket to check out a connection, about a third of
        redis-py's cost per command. A cluster client keeps its pooled path.
        """
        if self.is_cluster:
            return self.client
        own = self._own
        if getattr(own, "pid", None) != pid.current():  # none yet, or made before a fork
            own.client, own.pid = self.client.client(), pid.current()
        return own.client

    def _execute(self, *command):
        """Run one command on this thread's own connection; once more if it had dropped.

        This is what the client does per command (connection.py: one retry on a
        dropped connection, none on a timeout), without its per-call machinery: a
        lock, a retry object, observability hooks and reply callbacks, about 40 % of
        the CPU of a command on the request path. hiredis packs the command: redis-py's
        own packing first copies every argument, a third of the app's CPU per event at
        1,000 events a batch. A request called in the worker's event loop sends it
        through the loop's pipeline instead, and the loop serves on until the reply is
        in. A cluster client keeps its own path, which routes by slot.
        """
        if self.loop_connector is not None and portal.in_loop():
            pipeline = self._loop_pipeline()
            try:
                return portal.await_in_loop(pipeline.execute(command))
            except redis.ConnectionError:
                return portal.await_in_loop(pipeline.execute(command))
        client = self._thread_client()
        if self.is_cluster:
            return client.execute_command(*command)
        connection = client.connection
        packed = [hiredis.pack_command(command)]
        try:
            connection.send_packed_command(packed)
            return connection.read_response()
        except redis.ConnectionError:
            # The connection has closed itself; the next send opens a fresh one.
            connection.send_packed_command(packed)
            return connection.read_response()

    def _loop_pipeline(self) -> LoopPipeline:
        """The running event loop's LoopPipeline, made on first use: its connection
        and reader task belong to that loop (a forked worker runs a loop of its own)."""
        loop = asyncio.get_running_loop()
        if self._pipeline is None or self._pipeline[0] is not loop:
            self._pipeline = (loop, LoopPipeline(self.loop_connector))
        return self._pipeline[1]

    def _run_script(self, script, keys: list[str], args: list):
        """Run a registered script with EVALSHA through _execute."""
        if self.is_cluster:
            return script(keys=keys, args=args, client=self.client)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return self._execute(*command)
        except NoScriptError:
            # A restarted or flushed Redis has lost the script: load it, run it again
            # (through _execute, so that a request in the loop does not block it).
            self._execute("SCRIPT", "LOAD", script.script)
            return self._execute(*command)

    def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers PING."""
        with unavailable_as_503():
            self.client.ping()


class unavailable_as_503:  # named for how it reads: `with unavailable_as_503():`
    """Turn Redis being down, slow, full or read-only into StoreUnavailable.

    A class rather than a @contextmanager: every Redis call of a request enters
    one, and a generator-based one costs several calls more each time.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> bool:
        if kind is None:
            return False
        if issubclass(kind, TRANSIENT_ERRORS) or (
            issubclass(kind, redis.ResponseError) and TRANSIENT_REPLY.search(str(exc))
        ):
            raise StoreUnavailable(f"{kind.__name__}: {exc}") from exc
        return False
