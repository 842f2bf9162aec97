"""Group commit: requests of one kind that arrive while a group of them is being sent to the
database go together as the next group, one command for all of them.

A request waits at most for the group in flight and then its own, so a lone request goes out at
once and concurrent ones share commands (as databases group the commits of transactions that
finish together). Each request gets its own result or its own exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Groups(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[list[Result | BaseException]]]) -> None:
        """`send(items)`: one command (or as few as the kind allows) for the whole group; returns
        each item's result, or the exception its request raises, in the items' order."""
        self._send = send
        self._waiting: list[tuple[Item, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None

    async def submit(self, item: Item) -> Result:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_groups())
        return await done

    async def _send_groups(self) -> None:
        group: list[tuple[Item, asyncio.Future]] = []
        try:
            while self._waiting:
                # a request that stopped waiting (cancelled) before its group went out is left out
                group, self._waiting = [entry for entry in self._waiting if not entry[1].done()], []
                if not group:
                    continue
                try:
                    results: list = list(await self._send([item for item, _ in group]))
                except Exception as exc:  # the whole command failed: every request of it fails
                    results = [exc] * len(group)
                for (_, done), result in zip(group, results, strict=True):
                    if done.done():
                        continue
                    if isinstance(result, BaseException):
                        done.set_exception(result)
                    else:
                        done.set_result(result)
                group = []
        except BaseException:  # this task cancelled (shutdown): nobody is left waiting forever
            for _, done in group + self._waiting:
                done.cancel()
            self._waiting = []
            raise
        finally:
            self._sender = None
