"""The one shape every resource of the bus has: `start()` / `stop()`, both safe to call twice,
and the `async with` form that calls them."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncResource:
    """Base of clients, servers and tables: subclasses implement start() and stop()."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
