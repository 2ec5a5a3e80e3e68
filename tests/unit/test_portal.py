"""app/portal.py: sync calls that await in the event loop that runs them."""

import asyncio
import contextvars

import pytest

from app import portal

request_id = contextvars.ContextVar("request_id", default="none")


async def later(value, delay: float = 0.01):
    await asyncio.sleep(delay)
    return value


async def fail():
    await asyncio.sleep(0)
    raise KeyError("gone")


def test_a_call_gets_what_it_awaited_and_returns_its_result() -> None:
    def work(a, b):
        assert portal.in_loop()
        return portal.await_in_loop(later(a)) + portal.await_in_loop(later(b))

    assert asyncio.run(portal.call(work, 2, 3)) == 5
    assert not portal.in_loop()


def test_an_awaited_error_is_raised_in_the_call_where_it_can_be_handled() -> None:
    def work():
        try:
            portal.await_in_loop(fail())
        except KeyError as exc:
            return f"handled {exc}"

    assert asyncio.run(portal.call(work)) == "handled 'gone'"


def test_an_error_the_call_does_not_handle_reaches_the_caller() -> None:
    with pytest.raises(KeyError, match="gone"):
        asyncio.run(portal.call(lambda: portal.await_in_loop(fail())))


def test_paused_calls_interleave_and_each_keeps_its_own_context() -> None:
    order = []

    def work(name: str, delay: float):
        request_id.set(name)
        order.append(f"{name} starts")
        portal.await_in_loop(later(None, delay))
        order.append(f"{name} resumes")
        return request_id.get()

    async def both():
        return await asyncio.gather(portal.call(work, "slow", 0.05), portal.call(work, "fast", 0))

    assert asyncio.run(both()) == ["slow", "fast"]
    # The fast call ran while the slow one was paused.
    assert order == ["slow starts", "fast starts", "fast resumes", "slow resumes"]
    assert request_id.get() == "none"


def test_a_portal_serves_the_next_call_once_its_call_has_ended() -> None:
    from greenlet import getcurrent

    async def two_in_turn():
        first = await portal.call(getcurrent)
        second = await portal.call(getcurrent)
        return first, second

    first, second = asyncio.run(two_in_turn())
    assert first is second
    assert first is not getcurrent()


def test_a_reused_portal_starts_each_call_in_an_empty_context() -> None:
    def set_and_return(name: str):
        before = request_id.get()
        request_id.set(name)
        return before

    async def two_in_turn():
        return [await portal.call(set_and_return, "a"), await portal.call(set_and_return, "b")]

    assert asyncio.run(two_in_turn()) == ["none", "none"]


def test_a_portal_whose_call_raised_serves_the_next_call() -> None:
    async def fail_then_succeed():
        with pytest.raises(KeyError, match="gone"):
            await portal.call(lambda: portal.await_in_loop(fail()))
        return await portal.call(lambda: portal.await_in_loop(later("fine")))

    assert asyncio.run(fail_then_succeed()) == "fine"


def test_an_idle_portal_holds_nothing_of_its_last_call() -> None:
    import gc
    import weakref

    class Body:
        pass

    def echo(body):
        return body

    async def one_call():
        body = Body()
        returned = await portal.call(echo, body)
        assert returned is body
        return weakref.ref(body)

    gone = asyncio.run(one_call())
    gc.collect()
    assert gone() is None
