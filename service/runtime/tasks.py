"""The long-running tasks of a process part, owned in one place: started in order, stopped
newest first (so a task is stopped before the ones it may depend on), each awaited until it
has ended.

Unlike :class:`asyncio.TaskGroup`, one task ending or failing does not cancel the others:
a node keeps serving what it can, and readiness reports what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    def adopt(self, tasks: list[asyncio.Task[None]]) -> None:
        """Own tasks a part started itself (trade sources start one per source)."""
        self._tasks.extend(tasks)

    def __bool__(self) -> bool:
        """Whether any task was started."""
        return bool(self._tasks)

    async def stop(self, *, sparing: asyncio.Task[None] | None = None) -> None:
        """Cancel every task but ``sparing``, newest first, and wait for each to end."""
        for task in reversed(self._tasks):
            if task is not sparing:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
