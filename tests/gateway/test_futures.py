import asyncio

import pytest

from gateway.futures import pass_failure


async def test_a_result_is_not_passed_on() -> None:
    loop = asyncio.get_running_loop()
    done, out = loop.create_future(), loop.create_future()
    done.set_result(1)
    assert pass_failure(done, out) is False
    assert not out.done()


async def test_an_exception_is_passed_on() -> None:
    loop = asyncio.get_running_loop()
    done, out = loop.create_future(), loop.create_future()
    done.set_exception(ValueError("commit failed"))
    assert pass_failure(done, out) is True
    with pytest.raises(ValueError, match="commit failed"):
        out.result()


async def test_a_cancellation_is_passed_on() -> None:
    loop = asyncio.get_running_loop()
    done, out = loop.create_future(), loop.create_future()
    done.cancel()
    assert pass_failure(done, out) is True
    assert out.cancelled()


async def test_an_out_already_done_is_left_alone() -> None:
    loop = asyncio.get_running_loop()
    done, out = loop.create_future(), loop.create_future()
    out.set_result("answered")
    done.set_exception(ValueError("late"))
    assert pass_failure(done, out) is True
    assert out.result() == "answered"
