"""app/store/pipeline.py on a real redis-server: commands sent together, replies in order."""

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from app import connection
from app.config import Settings
from app.store.pipeline import LoopPipeline

from .conftest import RedisServer, free_port


@contextlib.asynccontextmanager
async def pipeline_to(url: str, timeout: float = 5) -> AsyncIterator[LoopPipeline]:
    settings = Settings(redis_url=url, redis_timeout=timeout)
    pipeline = LoopPipeline(connection.loop_connector(settings))
    try:
        yield pipeline
    finally:
        await pipeline.close()


@contextlib.contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """The server stopped (SIGSTOP): connections stay open, nothing is answered."""
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


def reads(client: redis.Redis) -> int:
    return client.info("stats")["total_reads_processed"]


def test_commands_sent_at_once_share_one_write_and_get_their_replies_in_order(
    real_redis: redis.Redis, redis_url: str
) -> None:
    async def fifty_increments():
        async with pipeline_to(redis_url) as pipeline:
            await pipeline.execute(("PING",))  # connected
            before = reads(real_redis)
            replies = await asyncio.gather(*(pipeline.execute(("INCR", "n")) for _ in range(50)))
            return replies, reads(real_redis) - before

    replies, read_calls = asyncio.run(fifty_increments())
    assert replies == list(range(1, 51))
    # One read for the 50 commands and one for each INFO; one read per command: 51.
    assert read_calls <= 3


def test_an_error_reply_goes_to_its_own_caller_only(
    real_redis: redis.Redis, redis_url: str
) -> None:
    async def mixed():
        async with pipeline_to(redis_url) as pipeline:
            return await asyncio.gather(
                pipeline.execute(("SET", "k", "text")),
                pipeline.execute(("INCR", "k")),
                pipeline.execute(("GET", "k")),
                return_exceptions=True,
            )

    ok, failed, value = asyncio.run(mixed())
    assert ok == "OK" and value == "text"  # raw replies: no client callbacks
    assert isinstance(failed, redis.ResponseError) and "not an integer" in str(failed)


def test_a_caller_that_stopped_waiting_leaves_the_replies_of_others_in_place(
    real_redis: redis.Redis, redis_url: str
) -> None:
    async def one_cancelled():
        async with pipeline_to(redis_url) as pipeline:
            gone = asyncio.ensure_future(pipeline.execute(("SET", "a", "1")))
            kept = asyncio.ensure_future(pipeline.execute(("GET", "b")))
            await asyncio.sleep(0)  # both queued
            gone.cancel()
            real_redis.set("b", "2")
            return await kept, await pipeline.execute(("GET", "a"))

    assert asyncio.run(one_cancelled()) == ("2", "1")  # the cancelled SET still ran


def test_a_dropped_connection_fails_the_replies_due_and_the_next_command_reconnects(
    real_redis: redis.Redis, redis_url: str
) -> None:
    async def across_a_kill():
        async with pipeline_to(redis_url) as pipeline:
            assert await pipeline.execute(("PING",)) == "PONG"
            real_redis.client_kill_filter(skipme=True, _type="normal")
            with pytest.raises(redis.ConnectionError):
                await pipeline.execute(("SET", "after", "1"))
            return await pipeline.execute(("PING",))

    assert asyncio.run(across_a_kill()) == "PONG"


def test_a_frozen_redis_costs_a_timeout_and_its_return_a_fresh_connection(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()

    async def across_a_freeze():
        async with pipeline_to(server.url, timeout=0.5) as pipeline:
            assert await pipeline.execute(("PING",)) == "PONG"
            with frozen(server), pytest.raises(redis.TimeoutError):
                await pipeline.execute(("SET", "k", "v"))
            return await pipeline.execute(("GET", "k"))

    assert asyncio.run(across_a_freeze()) == "v"  # the SET was sent before the freeze ended


def test_a_reply_larger_than_one_read_arrives_whole(
    real_redis: redis.Redis, redis_url: str
) -> None:
    value = "x" * 1_000_000  # about 15 reads of the connection

    async def large_then_small():
        async with pipeline_to(redis_url) as pipeline:
            return await asyncio.gather(
                pipeline.execute(("SET", "big", value)),
                pipeline.execute(("GET", "big")),
                pipeline.execute(("STRLEN", "big")),
            )

    assert asyncio.run(large_then_small()) == ["OK", value, 1_000_000]


def test_an_unreachable_redis_fails_every_command_waiting_with_a_connection_error() -> None:
    async def to_nothing():
        async with pipeline_to(f"redis://127.0.0.1:{free_port()}/0", timeout=1) as pipeline:
            return await asyncio.gather(
                pipeline.execute(("PING",)), pipeline.execute(("PING",)), return_exceptions=True
            )

    replies = asyncio.run(to_nothing())
    assert [type(reply) for reply in replies] == [redis.ConnectionError] * 2


def test_closing_fails_the_replies_still_due(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()

    async def close_while_frozen():
        async with pipeline_to(server.url, timeout=30) as pipeline:
            await pipeline.execute(("PING",))
            with frozen(server):
                due = asyncio.ensure_future(pipeline.execute(("PING",)))
                await asyncio.sleep(0.05)  # written, no reply
                unsent = asyncio.ensure_future(pipeline.execute(("PING",)))
                await asyncio.sleep(0)  # queued, not written yet
                await pipeline.close()
                with pytest.raises(redis.ConnectionError):
                    await due
                with pytest.raises(redis.ConnectionError):
                    await unsent

    asyncio.run(close_while_frozen())


def test_the_connection_logs_in_and_selects_the_database_of_the_url(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    with redis.Redis(port=server.port) as admin:
        admin.config_set("requirepass", "loop-secret")

    async def write_to_db_3():
        url = f"redis://:loop-secret@127.0.0.1:{server.port}/3"
        async with pipeline_to(url) as pipeline:
            return await pipeline.execute(("SET", "where", "db 3"))

    assert asyncio.run(write_to_db_3()) == "OK"
    with redis.Redis(port=server.port, password="loop-secret", db=3) as db3:
        assert db3.get("where") == b"db 3"
