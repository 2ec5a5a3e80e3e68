"""Sync code called from the worker's event loop that can wait on the loop meanwhile.

The worker calls the Flask app in its loop. A request there that waits on Redis
would hold the whole loop; run in a Portal instead, it hands an awaitable back to
the loop (await_in_loop) and the loop serves other requests until it completes.
This is SQLAlchemy's greenlet_spawn / await_only, for one worker's loop.
"""

from greenlet import getcurrent, greenlet


class Portal(greenlet):
    """A greenlet running one sync call for a coroutine in the event loop."""


def in_loop() -> bool:
    """Whether the caller runs in a Portal, so await_in_loop may be called."""
    return type(getcurrent()) is Portal


def await_in_loop(awaitable):
    """The result of `awaitable`, awaited by the loop while this call is paused."""
    return getcurrent().parent.switch(awaitable)


async def call(function, *args):
    """function(*args) in a Portal: the awaitables it hands over are awaited here."""
    portal = Portal(function)
    value = portal.switch(*args)
    while not portal.dead:
        try:
            result = await value
        except BaseException as exc:  # noqa: BLE001 - it goes to the paused call
            value = portal.throw(exc)
        else:
            value = portal.switch(result)
    return value
