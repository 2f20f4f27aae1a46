"""Ends the broker access of liaison officers whose delegation was revoked or has expired.

The router stops copying to an officer, and refuses what it sends, the moment its delegation is
not in force. What the broker still allows (reading its inboxes, writing its outboxes) is ended
here: its ACLs and its SCRAM credential are deleted at its end date, or as soon as the directory
says REVOKED (`liaison officer revoke` does it too; doing it twice is harmless). It follows
`bus.directory` and wakes at the next end date, so an expiry takes effect within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from prometheus_client import CollectorRegistry

from liaison.core.metrics import MetricsServer
from liaison.core.runner import ShutdownSignal
from liaison.directory import Directory, Officer
from liaison.directory_feed import DirectoryFeed
from liaison.errors import ConfigError, LiaisonError
from liaison.onboarding import AccessControl, access_control
from services.delegations.metrics import DelegationsMetrics
from services.delegations.settings import DelegationsSettings

log = structlog.get_logger(__name__)


def ended(directory: Directory, now_ms: int, done: set[str]) -> list[Officer]:
    """Officers whose delegation is over (revoked, or past its end date) and not dealt with yet."""
    return [o for _, o in sorted(directory.officers.items())
            if o.code not in done and (o.status == "REVOKED" or o.ends_at <= now_ms)]


def next_end(directory: Directory, now_ms: int) -> int | None:
    """The earliest end date still to come, in ms."""
    return min((o.ends_at for o in directory.officers.values()
                if o.status == "ACTIVE" and o.ends_at > now_ms), default=None)


class Delegations:
    def __init__(self, settings: DelegationsSettings, *, access: AccessControl | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.access = access or access_control(settings, None)
        self.registry = registry or CollectorRegistry()
        self._changed = asyncio.Event()
        self.feed = DirectoryFeed(settings, on_change=self._changed.set)
        self.done: set[str] = set()
        self.metrics = DelegationsMetrics(self.registry)

    async def start(self) -> None:
        await self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()

    async def check(self) -> list[str]:
        """End the access of every officer due now; the codes done."""
        now = int(time.time() * 1000)
        directory = self.feed.current
        self.done -= {o.code for o in directory.officers.values() if o.in_force(now)}  # posted again
        self.metrics.in_force.set(sum(o.in_force(now) for o in directory.officers.values()))
        finished = []
        for officer in ended(directory, now, self.done):
            why = "revoked" if officer.status == "REVOKED" else "expired"
            try:
                lines = await self.access.revoke(self.settings, officer.code)
            except LiaisonError as exc:
                self.metrics.failures.inc()
                log.warning("could not end an officer's access; will retry", officer=officer.code,
                            error=str(exc))
                continue
            self.done.add(officer.code)
            self.metrics.ended.labels(why).inc()
            finished.append(officer.code)
            log.info("officer access ended", officer=officer.code, agency=officer.agency, why=why,
                     access=lines)
        return finished

    async def run(self, shutdown: ShutdownSignal) -> None:
        while not shutdown.is_set:
            await self.check()
            now = int(time.time() * 1000)
            wait = self.settings.delegation_check_s
            if (upcoming := next_end(self.feed.current, now)) is not None:
                wait = min(wait, max(0.0, (upcoming - now) / 1000) + 0.05)
            self._changed.clear()
            stopping = asyncio.create_task(shutdown.wait())
            changed = asyncio.create_task(self._changed.wait())
            try:
                await asyncio.wait({stopping, changed}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (stopping, changed):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


async def run(settings: DelegationsSettings, shutdown: ShutdownSignal) -> None:
    """Serve until SIGINT/SIGTERM: the metrics endpoint, then the watch."""
    service = Delegations(settings)
    async with contextlib.AsyncExitStack() as stack:
        await service.start()
        stack.push_async_callback(service.stop)
        try:
            metrics = MetricsServer(service.registry, host=settings.metrics_host, port=settings.metrics_port)
            metrics.start()
        except OSError as exc:
            raise ConfigError(f"metrics endpoint cannot listen on {settings.metrics_host}:"
                              f"{settings.metrics_port}: {exc.strerror or exc}") from None
        stack.callback(metrics.stop)
        log.info("delegations running", metrics=metrics.url)
        await service.run(shutdown)
