"""The node's task set: started in order, stopped newest first, one task spared on request."""

from __future__ import annotations

import asyncio

from service.runtime.tasks import TaskSet


async def test_tasks_stop_newest_first_and_the_spared_one_keeps_running():
    stopped: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(name)

    tasks = TaskSet()
    assert not tasks
    writer = tasks.start(forever("writer"), "writer")
    tasks.start(forever("ticker"), "ticker")
    tasks.start(forever("downsampler"), "downsampler")
    await asyncio.sleep(0)
    assert tasks

    await tasks.stop(sparing=writer)
    assert stopped == ["downsampler", "ticker"] and not writer.done()
    await tasks.stop()
    assert stopped == ["downsampler", "ticker", "writer"] and writer.cancelled()
