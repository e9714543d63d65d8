"""The unbatched mode serves searches one at a time in the order they were asked (FifoLock), so no request
starves under load. No timing: the order is checked, with each waiter known to be queued before the next."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hybridtower.service.batching import FifoLock


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the test's own condition")
        time.sleep(0.001)


def test_threads_queued_in_order_are_served_in_order():
    lock = FifoLock()
    served: list[int] = []
    lock.acquire()  # held: every thread below queues
    threads = []
    for i in range(12):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), served.append(i), lock.release()))
        t.start()
        threads.append(t)
        _wait_for(lambda: lock.waiting() == i + 1)  # thread i is queued before thread i+1 starts
    # a newcomer while the queue is long: it must not overtake anybody (threading.Lock lets it)
    lock.release()
    lock.acquire()
    served.append("newcomer")
    lock.release()
    for t in threads:
        t.join(10)
    assert served == list(range(12)) + ["newcomer"]
    assert not lock.locked() and lock.waiting() == 0


def test_release_hands_over_so_the_releaser_cannot_retake_it():
    lock = FifoLock()
    order: list[str] = []
    lock.acquire()
    t = threading.Thread(target=lambda: (lock.acquire(), order.append("waiter"), lock.release()))
    t.start()
    _wait_for(lambda: lock.waiting() == 1)
    lock.release()
    assert lock.locked()  # handed to the waiter, not free for a moment
    lock.acquire()  # the releasing thread asks again at once: it queues behind the waiter
    order.append("releaser")
    lock.release()
    t.join(10)
    assert order == ["waiter", "releaser"]


def test_coroutines_in_order_and_cancellation_does_not_block_the_queue():
    async def main():
        lock = FifoLock()
        served: list[int] = []
        await lock.acquire_async()

        async def user(i):
            async with lock:
                served.append(i)
                await asyncio.sleep(0)

        tasks = []
        for i in range(8):
            tasks.append(asyncio.create_task(user(i)))
            while lock.waiting() < i + 1:
                await asyncio.sleep(0)
        tasks[3].cancel()  # a client that went away while queued
        await asyncio.sleep(0)
        lock.release()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        assert served == [0, 1, 2, 4, 5, 6, 7]
        assert not lock.locked()

        # cancelled right after the lock was handed to it: it passes the lock on
        await lock.acquire_async()
        first = asyncio.create_task(user(100))
        second = asyncio.create_task(user(101))
        while lock.waiting() < 2:
            await asyncio.sleep(0)
        lock.release()  # hands to `first` (scheduled), then cancel it before it runs
        first.cancel()
        await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
        assert served[-1] == 101 and 100 not in served and not lock.locked()

    asyncio.run(main())


def test_threads_and_coroutines_share_one_queue():
    async def main():
        lock = FifoLock()
        served: list[str] = []
        lock.acquire()
        t = threading.Thread(target=lambda: (lock.acquire(), served.append("thread"), lock.release()))
        t.start()
        await asyncio.to_thread(_wait_for, lambda: lock.waiting() == 1)

        async def coro():
            async with lock:
                served.append("coroutine")

        task = asyncio.create_task(coro())
        while lock.waiting() < 2:
            await asyncio.sleep(0)
        await asyncio.to_thread(lock.release)  # released from another thread than the waiting loop's
        await asyncio.wait_for(task, 10)
        await asyncio.to_thread(t.join, 10)
        assert served == ["thread", "coroutine"] and not lock.locked()

    asyncio.run(main())


def test_release_unlocked_is_an_error():
    with pytest.raises(RuntimeError):
        FifoLock().release()
