"""The commands of the requests in one worker's event loop, sent to Redis together.

A request called in the loop hands its command to the loop and pauses
(app/portal.py); the loop serves the other requests that are ready meanwhile, and
the commands they send by then go out in the same write. Redis then reads and
answers them in one go instead of waking once per command, and the worker never
sits idle waiting on a reply. Each command is still a call of its own, run in the
order sent: a batch stays one atomic script call.

redis-py opens the connection (timeouts, TLS, AUTH, SELECT); from then on one task
reads it, hiredis parses the replies as they arrive, and each goes straight to its
caller. redis-py's own command path spent more CPU than that per reply: a timer and
a parser call each, and a sender task in between. A reply still missing after
REDIS_TIMEOUT drops the connection: its callers get a TimeoutError, and the next
command opens a fresh one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import hiredis
import redis
import redis.asyncio
from redis._parsers.base import BaseParser

READ_SIZE = 65536
CLOSED = "The connection to Redis was closed."


class LoopPipeline:
    """A worker loop's connection to Redis, opened on first use and after a failure,
    and the commands of the current loop turn, written in one go at its end."""

    def __init__(self, connect: Callable[[], redis.asyncio.Connection]):
        self._connect = connect  # a redis-py connection, not yet open
        self._unsent: list[tuple[bytes, asyncio.Future]] = []
        self._link: Link | None = None
        self._opening: asyncio.Task | None = None

    async def execute(self, command: tuple):
        """The reply to one command; an error reply raised as redis-py raises it
        (NoScriptError, ResponseError, ...). Once called, the command is sent even
        if its caller stops waiting."""
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        if not self._unsent:
            loop.call_soon(self._write)
        self._unsent.append((hiredis.pack_command(command), reply))  # as StoreBase packs
        return await reply

    async def close(self) -> None:
        """Close the connection; replies still due fail, and commands not yet sent."""
        due, self._unsent = self._unsent, []
        for _, reply in due:
            settle(reply, redis.ConnectionError(CLOSED))
        for task in (self._opening, self._link and self._link.reader):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _write(self) -> None:
        if not self._unsent:
            return  # failed meanwhile (close, or a connection that could not open)
        link = self._link
        if link is None or link.closed:
            if self._opening is None:
                self._opening = asyncio.get_running_loop().create_task(self._open())
            return  # written once it is open
        due, self._unsent = self._unsent, []
        link.write(due)

    async def _open(self) -> None:
        connection = self._connect()
        try:
            await connection.connect()
        except BaseException as exc:  # noqa: BLE001 - the callers waiting get it
            error = failure(exc)
            due, self._unsent = self._unsent, []
            for _, reply in due:
                settle(reply, error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            self._opening = None
        self._link = Link(connection)
        if self._unsent:
            self._write()


class Link:
    """One open connection: what was written on it, and the task reading its replies."""

    def __init__(self, connection: redis.asyncio.Connection):
        self._connection = connection
        # redis-py keeps the streams it opened as _reader and _writer (redis 8.1, pinned).
        self._stream_in, self._stream_out = connection._reader, connection._writer
        self._parser = hiredis.Reader(encoding="utf-8", replyError=BaseParser.parse_error)
        self._timeout = connection.socket_timeout
        self._waiting: deque[tuple[asyncio.Future, float]] = deque()  # (reply, deadline)
        self._watchdog: asyncio.TimerHandle | None = None
        self._error: redis.RedisError | None = None  # why the reader was stopped
        self.closed = False
        self.reader = asyncio.get_running_loop().create_task(self._read_replies())

    def write(self, due: list[tuple[bytes, asyncio.Future]]) -> None:
        """Write these commands in one go; their replies are due within the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout if self._timeout else float("inf")
        self._waiting.extend([(reply, deadline) for _, reply in due])
        self._stream_out.write(b"".join([packed for packed, _ in due]))
        if self._watchdog is None and self._timeout:
            self._watchdog = loop.call_at(deadline, self._check_deadline)

    async def _read_replies(self) -> None:
        parser, waiting = self._parser, self._waiting
        try:
            while True:
                data = await self._stream_in.read(READ_SIZE)
                if not data:
                    raise redis.ConnectionError("Redis closed the connection.")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    settle(waiting.popleft()[0], reply)
        except BaseException as exc:  # noqa: BLE001 - every caller still waiting gets it
            error = self._error or failure(exc)
            # The replies still due cannot be matched up any more: start afresh.
            self.closed = True
            if self._watchdog is not None:
                self._watchdog.cancel()
            while waiting:
                settle(waiting.popleft()[0], error)
            await self._connection.disconnect(nowait=True)
            if isinstance(exc, asyncio.CancelledError) and self._error is None:
                raise  # cancelled from outside (close), not by the deadline

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        oldest = self._waiting[0][1]
        if oldest <= loop.time():
            self._error = redis.TimeoutError(f"Redis did not answer within {self._timeout} s.")
            self.reader.cancel()
        else:
            self._watchdog = loop.call_at(oldest, self._check_deadline)


def failure(exc: BaseException) -> redis.RedisError:
    """What the callers waiting on a connection that `exc` ended are told."""
    if isinstance(exc, redis.RedisError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return redis.ConnectionError(CLOSED)
    if isinstance(exc, IndexError):
        return redis.ConnectionError("Redis sent a reply that no command asked for.")
    return redis.ConnectionError(f"{type(exc).__name__}: {exc}")


def settle(reply: asyncio.Future, outcome) -> None:
    """Give a waiting caller its reply or error, unless it stopped waiting (cancelled)."""
    if reply.done():
        return
    if isinstance(outcome, BaseException):
        reply.set_exception(outcome)
    else:
        reply.set_result(outcome)
