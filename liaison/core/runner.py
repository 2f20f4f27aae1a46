"""The service lifecycle: start, run until SIGINT/SIGTERM, stop gracefully in reverse order."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from liaison.core.logs import configure_logging
from liaison.core.settings import ServiceSettings, load
from liaison.errors import ConfigError, LiaisonError

log = structlog.get_logger(__name__)

S = TypeVar("S", bound=ServiceSettings)


class ShutdownSignal:
    """An event set by SIGINT/SIGTERM; services await it, then unwind their exit stack."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.received: str | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.trigger, sig.name)

    def trigger(self, reason: str = "requested") -> None:
        if not self.event.is_set():
            self.received = reason
            log.info("shutdown requested", reason=reason)
            self.event.set()

    async def wait(self) -> None:
        await self.event.wait()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()


def run_service(
    name: str,
    settings_cls: type[S],
    run: Callable[[S, ShutdownSignal], Awaitable[None]],
) -> None:
    """Entry point of `python -m services.<name>`: settings, logs, then the service until a signal."""
    try:
        settings = load(settings_cls)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, json=settings.log_json)
    structlog.contextvars.bind_contextvars(service=name)
    log.info("starting", settings=settings.safe_dump())

    async def main() -> None:
        shutdown = ShutdownSignal()
        shutdown.install()
        await run(settings, shutdown)

    try:
        asyncio.run(main())
    except LiaisonError as exc:
        log.error("stopped on a fault"  # noqa: TRY400  # the fault is ours and named; no traceback needed
                 , error=str(exc), error_type=type(exc).__name__)
        raise SystemExit(1) from None
    log.info("stopped")
