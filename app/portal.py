"""Sync code called from the worker's event loop that can wait on the loop meanwhile.

The worker calls the Flask app in its loop. A request there that waits on Redis
would hold the whole loop; run in a Portal instead, it hands an awaitable back to
the loop (await_in_loop) and the loop serves other requests until it completes.
This is SQLAlchemy's greenlet_spawn / await_only, for one worker's loop.

A Portal serves one call after another: a new greenlet maps a fresh frame stack
for its first call and unmaps it when it ends (an mmap, a munmap and page faults
per request), so idle ones are kept for the next call.
"""

import contextvars
import threading

from greenlet import getcurrent, greenlet

MAX_IDLE = 64  # Portals kept per thread beyond a burst of concurrent calls


class Portal(greenlet):
    """A greenlet running sync calls for coroutines in the event loop, one at a time."""


class _Returned:
    """What a call ended with, kept on its Portal until the caller takes it."""

    __slots__ = ("value", "error")

    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


ENDED = object()  # what a Portal hands back when its call has ended


def _serve(function, args):
    portal = getcurrent()
    while True:
        try:
            portal.returned = _Returned(function(*args))
        except BaseException as exc:  # noqa: BLE001 - it goes to the caller
            portal.returned = _Returned(error=exc)
        # While idle, hold nothing of the call (its environ holds the request body).
        function = args = None
        function, args = portal.parent.switch(ENDED)


_idle = threading.local()  # greenlets switch only within their own thread


def in_loop() -> bool:
    """Whether the caller runs in a Portal, so await_in_loop may be called."""
    return type(getcurrent()) is Portal


def await_in_loop(awaitable):
    """The result of `awaitable`, awaited by the loop while this call is paused."""
    return getcurrent().parent.switch(awaitable)


async def call(function, *args):
    """function(*args) in a Portal: the awaitables it hands over are awaited here."""
    idle = _idle.__dict__.setdefault("portals", [])
    portal = idle.pop() if idle else Portal(_serve)
    # Each call starts in an empty context, as in a new greenlet, and returns to here.
    portal.gr_context = contextvars.Context()
    portal.parent = getcurrent()
    value = portal.switch(function, args)
    while value is not ENDED:
        try:
            result = await value
        except BaseException as exc:  # noqa: BLE001 - it goes to the paused call
            value = portal.throw(exc)
        else:
            value = portal.switch(result)
    returned, portal.returned = portal.returned, None
    if len(idle) < MAX_IDLE:
        idle.append(portal)
    if returned.error is not None:
        raise returned.error
    return returned.value
