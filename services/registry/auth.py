"""Who may use the registry: the bus's own Kafka users, checked by logging in to the broker.

The registry keeps no password list of its own. A request's HTTP basic credentials are tried as a
SCRAM login against the broker, so onboarding, rotation and suspension apply here too; a success is
remembered for `registry_auth_cache_s` (as a hash), so a revoked password works at most that long.
Reads need any valid user; writes (register, delete, config) need one of `registry_writers`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed

from liaison.core.settings import KafkaSettings
from liaison.errors import ConfigError

log = structlog.get_logger(__name__)

READS_BY_POST = ("/subjects/{subject}", "/compatibility/")  # lookups and checks change nothing


class BrokerUnavailable(Exception):
    """The broker could not be asked, so a credential could not be checked either way."""


class BrokerLogin:
    """Checks a user and password with one SCRAM handshake on a fresh connection to the broker."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float = 10.0) -> None:
        if not settings.security_protocol.startswith("SASL"):
            raise ConfigError("LIAISON_REGISTRY_AUTH checks passwords by logging in to the broker, so the "
                              "registry's own connection must use SASL (LIAISON_SECURITY_PROTOCOL=SASL_SSL)")
        self.settings = settings
        self.timeout_s = timeout_s
        self._ssl = settings.kafka_kwargs().get("ssl_context")  # the CA is read once
        self._servers = [server.strip().rpartition(":") for server in settings.bootstrap_servers.split(",")]

    async def __call__(self, username: str, password: str) -> bool:
        """True or False from the first broker that answers; BrokerUnavailable when none does."""
        failure = "no bootstrap server"
        for host, _, port in self._servers:
            try:
                login = create_conn(
                    host, int(port), ssl_context=self._ssl, security_protocol=self.settings.security_protocol,
                    sasl_mechanism=self.settings.sasl_mechanism, sasl_plain_username=username,
                    sasl_plain_password=password, request_timeout_ms=int(self.timeout_s * 1000))
                conn = await asyncio.wait_for(login, self.timeout_s)
            except SaslAuthenticationFailed:
                return False
            except (KafkaError, OSError, TimeoutError) as exc:
                failure = f"{host}:{port}: {exc or type(exc).__name__}"
                continue
            conn.close()
            return True
        raise BrokerUnavailable(failure)


class Authenticator:
    """Remembers recent successful logins so that a client's requests cost one handshake a minute."""

    def __init__(self, login: Callable[[str, str], Awaitable[bool]], *, writers: frozenset[str],
                 cache_s: float) -> None:
        self._login = login
        self.writers = writers
        self.cache_s = cache_s
        self._valid_until: dict[tuple[str, bytes], float] = {}

    async def valid(self, username: str, password: str) -> bool:
        key = (username, hashlib.sha256(password.encode()).digest())
        now = time.monotonic()
        if self._valid_until.get(key, 0.0) > now:
            return True
        ok = await self._login(username, password)
        if ok:
            self._valid_until = {k: t for k, t in self._valid_until.items() if t > now}
            self._valid_until[key] = now + self.cache_s
        return ok


def is_write(request: web.Request) -> bool:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    return not (request.method == "POST" and (path == READS_BY_POST[0] or path.startswith(READS_BY_POST[1])))


def decode_basic(header: str) -> tuple[str, str] | None:
    """(user, password) of an HTTP basic `Authorization` value; None when it is not one."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep and user else None


def _refuse(status: int, error_code: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="liaison-registry"'} if status == 401 else None
    return web.json_response({"error_code": error_code, "message": message}, status=status, headers=headers,
                             content_type="application/vnd.schemaregistry.v1+json")


def auth_middleware(auth: Authenticator) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        if header is None:
            return _refuse(401, 40101, "Unauthorized: send the bus user and password (HTTP basic)")
        given = decode_basic(header)
        if given is None:
            return _refuse(401, 40101, "Unauthorized: malformed Authorization header")
        user, password = given
        try:
            ok = await auth.valid(user, password)
        except BrokerUnavailable as exc:
            log.warning("cannot check credentials", user=user, error=str(exc))
            return _refuse(503, 50302, "Cannot check credentials now: the broker does not answer")
        if not ok:
            log.info("registry login refused", user=user)
            return _refuse(401, 40101, "Unauthorized: wrong user or password")
        if is_write(request) and user not in auth.writers:
            return _refuse(403, 40301, f"User {user} may read schemas but not change them")
        return await handler(request)

    return check
