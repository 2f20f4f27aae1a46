"""Who may use the registry: the bus's own Kafka users, checked by logging in to the broker.

The registry keeps no password list of its own. A request's HTTP basic credentials are tried as a
SCRAM login against the broker, so onboarding, rotation and suspension apply here too; a success is
remembered for `registry_auth_cache_s` (as a keyed hash), so a revoked password works at most that
long. A failure is remembered for `registry_failed_login_cache_s`, so a client repeating a wrong
password costs no broker login, and each source address may cause only so many failed broker logins
(a token bucket) before it gets 429 for a while. Each user's requests are rate-limited the same way.
Reads need any valid user; writes (register, delete, config) need one of `registry_writers`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaError, SaslAuthenticationFailed

from liaison.core.settings import KafkaSettings
from liaison.errors import ConfigError
from services.registry.limits import RateLimiter, RefusalReason
from services.registry.store import Refusal

log = structlog.get_logger(__name__)

READS_BY_POST = ("/subjects/{subject}", "/compatibility/")  # lookups and checks change nothing
USER: Final = web.RequestKey("user", str)  # the authenticated user, for logs
MAX_REMEMBERED = 10_000  # credentials remembered at most, good and bad each
CLOSE_WAIT_S = 2.0  # how long a login's connection may take to close
_Key = tuple[str, bytes]  # user, HMAC of the password


class BrokerUnavailable(Exception):
    """The broker could not be asked, so a credential could not be checked either way."""


class LoginThrottled(Exception):
    """This address caused too many failed logins lately; it may try again after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


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
            conn = AIOKafkaConnection(
                host, int(port), ssl_context=self._ssl, security_protocol=self.settings.security_protocol,
                sasl_mechanism=self.settings.sasl_mechanism, sasl_plain_username=username,
                sasl_plain_password=password, request_timeout_ms=int(self.timeout_s * 1000))
            try:
                await asyncio.wait_for(conn.connect(), self.timeout_s)
            except SaslAuthenticationFailed:
                await _closed(conn)
                return False
            except (KafkaError, OSError, TimeoutError) as exc:
                conn.close()
                failure = f"{host}:{port}: {exc or type(exc).__name__}"
                continue
            await _closed(conn)
            return True
        raise BrokerUnavailable(failure)


async def _closed(conn: AIOKafkaConnection) -> None:
    """Close a connection and wait until its socket is, so that none is left to the garbage
    collector (a TLS transport closes only after its shutdown exchange)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(conn.close()), CLOSE_WAIT_S)


class Authenticator:
    """Remembers recent logins, good and bad, so that a client's requests cost one handshake a minute.

    Passwords are remembered only as an HMAC under a key made at start and never written anywhere.
    Without `failed_cache_s` and `failures` (the defaults), every wrong password is asked of the broker.
    """

    def __init__(self, login: Callable[[str, str], Awaitable[bool]], *, writers: frozenset[str],
                 cache_s: float, failed_cache_s: float = 0.0, failures: RateLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic, bus_prefix: str = "") -> None:
        """`bus_prefix`: on a cluster shared by several buses, only this bus's users (whose names
        start with its prefix) and the writers may use this registry."""
        self._login = login
        self.writers = writers
        self.bus_prefix = bus_prefix
        self.cache_s = cache_s
        self.failed_cache_s = failed_cache_s
        self.failures = failures
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._valid_until: dict[_Key, float] = {}
        self._failed_until: dict[_Key, float] = {}

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    async def valid(self, username: str, password: str, *, peer: str | None = None) -> bool:
        """Whether the broker accepts this user and password (or did so lately).

        Raises:
            LoginThrottled: `peer` caused too many failed broker logins; the broker was not asked.
            BrokerUnavailable: no broker answered.
        """
        if not username.startswith(self.bus_prefix) and username not in self.writers:
            return False  # another bus's user: its password is none of this registry's business
        key = (username, self._digest(password))
        now = self._clock()
        if self._valid_until.get(key, 0.0) > now:
            return True
        if self._failed_until.get(key, 0.0) > now:
            return False
        give_back: Callable[[], None] = _nothing
        if self.failures is not None and peer is not None:
            wait = self.failures.take(peer)  # taken before asking, so concurrent guesses count too
            if wait > 0:
                raise LoginThrottled(wait)
            give_back = partial(self.failures.give_back, peer)
        try:
            ok = await self._login(username, password)
        except BaseException:
            give_back()  # the broker's fault, not the client's
            raise
        now = self._clock()
        if ok:
            give_back()  # only failures count against an address
            _remember(self._valid_until, key, now + self.cache_s, now)
        elif self.failed_cache_s > 0:
            _remember(self._failed_until, key, now + self.failed_cache_s, now)
        return ok


def _nothing() -> None:
    pass


def _remember(cache: dict[_Key, float], key: _Key, until: float, now: float) -> None:
    """Add an entry; when full, drop the expired ones, then the oldest."""
    if len(cache) >= MAX_REMEMBERED:
        for old in [k for k, t in cache.items() if t <= now]:
            del cache[old]
        while len(cache) >= MAX_REMEMBERED:
            del cache[next(iter(cache))]
    cache[key] = until


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
    # 401/403/503 are answered here, with the header 401 needs; limits raise Refusal for api's guard.
    headers = {"WWW-Authenticate": 'Basic realm="liaison-registry"'} if status == 401 else None
    return web.json_response({"error_code": error_code, "message": message}, status=status, headers=headers,
                             content_type="application/vnd.schemaregistry.v1+json")


def auth_middleware(auth: Authenticator, *, user_rate: RateLimiter | None = None) -> Middleware:
    """Require a bus user; past the failed-login or per-user rate, raise a 429 Refusal."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        if header is None:
            return _refuse(401, 40101, "Unauthorized: send the bus user and password (HTTP basic)")
        given = decode_basic(header)
        if given is None:
            return _refuse(401, 40101, "Unauthorized: malformed Authorization header")
        user, password = given
        peer = request.remote or "unknown"
        try:
            ok = await auth.valid(user, password, peer=peer)
        except LoginThrottled as exc:
            raise Refusal(429, 42903, "Too many failed logins from this address; retry later",
                          reason=RefusalReason.LOGIN_THROTTLED, retry_after_s=exc.retry_after_s) from None
        except BrokerUnavailable as exc:
            log.warning("cannot check credentials", user=user, error=str(exc))
            return _refuse(503, 50302, "Cannot check credentials now: the broker does not answer")
        if not ok:
            log.info("registry login refused", user=user, peer=peer)
            return _refuse(401, 40101, "Unauthorized: wrong user or password")
        request[USER] = user
        if user_rate is not None and (wait := user_rate.take(user)) > 0:
            raise Refusal(429, 42901, f"Too many requests from user {user}; retry later",
                          reason=RefusalReason.USER_RATE, retry_after_s=wait)
        if is_write(request) and user not in auth.writers:
            return _refuse(403, 40301, f"User {user} may read schemas but not change them")
        return await handler(request)

    return check
