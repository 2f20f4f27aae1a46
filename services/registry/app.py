"""The registry service: the schema store, the REST API on top of it, its schema workers and metrics."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from liaison.core.lifecycle import AsyncResource
from liaison.core.metrics import MetricsServer
from liaison.core.runner import ShutdownSignal
from liaison.errors import ConfigError
from services.registry.api import RegistryMetrics, create_app
from services.registry.auth import Authenticator, BrokerLogin, auth_middleware
from services.registry.limits import RateLimiter
from services.registry.settings import RegistrySettings
from services.registry.store import SchemaStore
from services.registry.worker import SchemaWorkers

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 10.0  # in-flight requests get this long to finish on stop


class RegistryServer(AsyncResource):
    """The store, the schema workers and the HTTP server as one resource.

    Port 0 picks a free port, known after start().
    """

    def __init__(self, settings: RegistrySettings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = RegistryMetrics(registry if registry is not None else CollectorRegistry())
        self.workers = SchemaWorkers(
            workers=settings.registry_parse_workers, timeout_s=settings.registry_parse_timeout_s,
            max_pending=settings.registry_parse_max_pending)
        self.store = SchemaStore(settings, on_bad_record=self.metrics.bad_records.inc,
                                 checker=self.workers.check)
        self.metrics.schemas.set_function(lambda: self.store.state.schema_count)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("registry server not started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.registry_tls_certfile else "http"
        return f"{scheme}://{self.settings.registry_host}:{self.port}"

    def _tls(self) -> ssl.SSLContext | None:
        cert, key = self.settings.registry_tls_certfile, self.settings.registry_tls_keyfile
        if cert is None:
            return None
        if key is None:
            raise ConfigError("LIAISON_REGISTRY_TLS_KEYFILE is needed with LIAISON_REGISTRY_TLS_CERTFILE")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the registry's TLS certificate {cert}: {exc}") from None
        return context

    def _auth(self) -> Authenticator | None:
        settings = self.settings
        if not settings.registry_auth:
            return None
        failures = RateLimiter(settings.registry_failed_logins_per_s, settings.registry_failed_logins_burst)
        return Authenticator(BrokerLogin(settings), writers=settings.writers,
                             cache_s=settings.registry_auth_cache_s,
                             failed_cache_s=settings.registry_failed_login_cache_s, failures=failures,
                             bus_prefix=settings.topic_prefix)

    def _app(self, auth: Authenticator | None) -> web.Application:
        settings = self.settings
        middleware = None
        if auth is not None:
            per_user = RateLimiter(settings.registry_user_requests_per_s,
                                   settings.registry_user_requests_burst)
            middleware = auth_middleware(auth, user_rate=per_user)
        return create_app(self.store, self.metrics, self.workers, settings.schema_limits, middleware)

    async def start(self) -> None:
        """Start the schema workers, read the schemas topic to its end, then listen; safe to call twice."""
        if self._runner is not None:
            return
        tls, auth = self._tls(), self._auth()
        await self.workers.start()
        try:
            await self.store.start()
        except BaseException:
            await self.workers.stop()
            raise
        runner = web.AppRunner(self._app(auth), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        host, port = self.settings.registry_host, self.settings.registry_port
        try:
            await runner.setup()
            await web.TCPSite(runner, host, port, ssl_context=tls).start()
        except OSError as exc:
            await runner.cleanup()
            await self.store.stop()
            await self.workers.stop()
            raise ConfigError(
                f"schema registry cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        except BaseException:
            await runner.cleanup()
            await self.store.stop()
            await self.workers.stop()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        limits = self.settings.schema_limits
        log.info("registry listening", url=self.url, topic=self.settings.registry_topic,
                 auth=auth is not None, writers=sorted(auth.writers) if auth else None,
                 max_body_bytes=limits.max_body_bytes, max_schema_elements=limits.max_elements,
                 max_schema_depth=limits.max_depth, parse_timeout_s=self.settings.registry_parse_timeout_s)

    async def stop(self) -> None:
        """Stop listening (letting requests in flight finish), then the store and the workers; safe twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._port = None
        await self.store.stop()
        await self.workers.stop()



async def run(settings: RegistrySettings, shutdown: ShutdownSignal) -> None:
    """Serve until SIGINT/SIGTERM; a store that stops following its topic ends the service with the fault."""
    registry = CollectorRegistry()
    async with AsyncExitStack() as stack:
        metrics = await stack.enter_async_context(
            MetricsServer(registry, host=settings.metrics_host, port=settings.metrics_port))
        server = RegistryServer(settings, registry=registry)
        stack.push_async_callback(server.stop)
        if not await _unless_shutdown(server.start(), shutdown):
            return
        log.info("registry serving", url=server.url, metrics=metrics.url)
        await _unless_shutdown(server.store.watch(), shutdown)
    # Leaving the stack stopped the HTTP server, then the store, then the metrics endpoint.


async def _unless_shutdown(work: Coroutine[Any, Any, None], shutdown: ShutdownSignal) -> bool:
    """Run `work` until it ends (True; its fault propagates) or shutdown is requested first (False)."""
    task = asyncio.create_task(work)
    stop = asyncio.create_task(shutdown.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        finished = task.done()
        task.cancel()
        stop.cancel()
        await asyncio.gather(task, stop, return_exceptions=True)
    if finished:
        task.result()  # raises the fault that ended it
    return finished
