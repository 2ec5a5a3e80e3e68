"""The commands of the requests in one worker's event loop, sent to Redis together.

A request called in the loop hands its command to the loop and pauses
(app/portal.py); the loop serves the other requests that are ready meanwhile, and
the commands they send by then go out in the same write. Redis then reads and
answers them in one go instead of waking once per command, and the worker never
sits idle waiting on a reply. Each command is still a call of its own, run in the
order sent: a batch stays one atomic script call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import hiredis
import redis
import redis.asyncio


class LoopPipeline:
    """One asyncio Redis connection of a worker's loop and the commands due on it."""

    def __init__(self, connect: Callable[[], redis.asyncio.Connection]):
        self._connection = connect()  # opened by its first send, again after a failure
        self._queue: list[tuple[bytes, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._sender = asyncio.get_running_loop().create_task(self._send_forever())

    async def execute(self, command: tuple):
        """The reply to one command; an error reply raised as redis-py raises it
        (NoScriptError, ResponseError, ...)."""
        reply = asyncio.get_running_loop().create_future()
        self._queue.append((hiredis.pack_command(command), reply))  # as StoreBase packs
        self._wakeup.set()
        return await reply

    async def close(self) -> None:
        """Stop sending and close the connection; replies still due are dropped."""
        self._sender.cancel()
        await self._connection.disconnect()

    async def _send_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            due, self._queue = self._queue, []
            await self._send(due)

    async def _send(self, due: list[tuple[bytes, asyncio.Future]]) -> None:
        """Write the commands in one go, then hand out their replies in order."""
        connection = self._connection
        answered = 0
        try:
            await connection.send_packed_command(
                b"".join([packed for packed, _ in due]), check_health=False
            )
            for _, reply in due:
                try:
                    value = await connection.read_response()
                except redis.ResponseError as exc:
                    settle(reply, exc)
                else:
                    settle(reply, value)
                answered += 1
        except Exception as exc:  # noqa: BLE001 - every caller still waiting gets it
            # The replies still due cannot be matched up any more: start afresh.
            await connection.disconnect(nowait=True)
            if not isinstance(exc, redis.RedisError):
                exc = redis.ConnectionError(f"{type(exc).__name__}: {exc}")
            for _, reply in due[answered:]:
                settle(reply, exc)


def settle(reply: asyncio.Future, outcome) -> None:
    """Give a waiting caller its reply or error, unless it stopped waiting (cancelled)."""
    if reply.done():
        return
    if isinstance(outcome, BaseException):
        reply.set_exception(outcome)
    else:
        reply.set_result(outcome)
