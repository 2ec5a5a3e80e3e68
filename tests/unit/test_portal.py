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
