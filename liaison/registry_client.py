"""A small async client for the Confluent Schema Registry REST API (ours or Confluent's)."""

from __future__ import annotations

import base64
import json
import ssl
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp

from liaison.errors import RegistryError

if TYPE_CHECKING:
    from liaison.core.settings import KafkaSettings

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def basic_auth_header(username: str, password: str) -> str:
    """An HTTP basic `Authorization` value (aiohttp's BasicAuth helper is deprecated)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class RegistryClient:
    """Register, look up and check schemas; one aiohttp session, closed by `close()`."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, auth: tuple[str, str] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
        if auth:
            self._headers["Authorization"] = basic_auth_header(*auth)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: KafkaSettings, *, timeout_s: float = 10.0) -> Self:
        """The registry of `settings`, with its user, password and CA when the bus is secured."""
        return cls(settings.registry_url, timeout_s=timeout_s, auth=settings.basic_auth(),
                   ssl_context=settings.ssl_context())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                       *, ok_missing: bool = False) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(
                method, f"{self.url}{path}", data=None if body is None else json.dumps(body),
                headers=self._headers, ssl=self._ssl,
            ) as resp:
                text = await resp.text()
                if resp.status == 404 and ok_missing:
                    return None
                if resp.status >= 400:
                    try:
                        err = json.loads(text)
                    except json.JSONDecodeError:
                        err = {"message": text[:200], "error_code": resp.status}
                    raise RegistryError(
                        f"registry {method} {path}: {resp.status} {err.get('message', '')}",
                        status=resp.status, error_code=int(err.get("error_code", resp.status)),
                    )
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError(f"schema registry at {self.url} unreachable: {exc or type(exc).__name__}") \
                from None

    async def register(self, subject: str, schema: str) -> int:
        reply = await self._request("POST", f"/subjects/{subject}/versions", {"schema": schema})
        return int(reply["id"])

    async def lookup(self, subject: str, schema: str) -> dict[str, Any] | None:
        """The registered version of `schema` under `subject`, or None when it is not there."""
        return await self._request("POST", f"/subjects/{subject}", {"schema": schema},  # type: ignore[no-any-return]
                                   ok_missing=True)

    async def schema_by_id(self, schema_id: int) -> str:
        reply = await self._request("GET", f"/schemas/ids/{schema_id}")
        return str(reply["schema"])

    async def latest(self, subject: str) -> dict[str, Any] | None:
        return await self._request("GET", f"/subjects/{subject}/versions/latest",  # type: ignore[no-any-return]
                                   ok_missing=True)

    async def subjects(self) -> list[str]:
        return list(await self._request("GET", "/subjects"))

    async def is_compatible(self, subject: str, schema: str) -> tuple[bool, list[str]]:
        """Whether `schema` may be registered under `subject` at its level (transitive ones too)."""
        reply = await self._request(
            "POST", f"/compatibility/subjects/{subject}/versions?verbose=true",
            {"schema": schema}, ok_missing=True,
        )
        if reply is None:  # no version yet: anything is compatible
            return True, []
        return bool(reply["is_compatible"]), list(reply.get("messages") or [])

    async def get_compatibility(self, subject: str | None = None) -> str:
        path = f"/config/{subject}?defaultToGlobal=true" if subject else "/config"
        reply = await self._request("GET", path)
        return str(reply.get("compatibilityLevel") or reply.get("compatibility"))

    async def set_compatibility(self, level: str, subject: str | None = None) -> None:
        await self._request("PUT", f"/config/{subject}" if subject else "/config",
                            {"compatibility": level})
