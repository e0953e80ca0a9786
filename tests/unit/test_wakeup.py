"""The stores' shared wake-up latch."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from dfhost.history import utcnow
from dfhost.store.wakeup import Wakeup


async def test_a_wakeup_set_while_nobody_waits_is_kept_once() -> None:
    wakeup = Wakeup()
    wakeup.set()
    wakeup.set()
    await asyncio.wait_for(wakeup.wait(None), 1)  # consumed here, both at once
    waiter = asyncio.ensure_future(wakeup.wait(None))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    wakeup.set()
    await asyncio.wait_for(waiter, 1)


async def test_wait_ends_at_until_or_after_the_longest_wait() -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(Wakeup().wait(utcnow() + timedelta(seconds=0.05)), 1)
    assert loop.time() - began >= 0.04
    began = loop.time()
    await asyncio.wait_for(Wakeup(longest=timedelta(seconds=0.05)).wait(None), 1)
    assert 0.04 <= loop.time() - began < 0.9
    began = loop.time()
    await Wakeup().wait(utcnow() - timedelta(seconds=1))  # already past: no wait at all
    assert loop.time() - began < 0.05
