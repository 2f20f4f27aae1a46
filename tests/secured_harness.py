"""A secured broker (SCRAM-SHA-512 over TLS, StandardAuthorizer, deny by default) shared by the
test modules that need one; each module works under a topic prefix of its own."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from liaison.core.settings import KafkaSettings
from liaison.errors import LocalBrokerError
from liaison.local.broker import BrokerConfig, BrokerSecurity, LocalBroker, free_port
from liaison.security.acls import REGISTRY, schemas_topic, username
from liaison.security.credentials import ADMIN, CredentialFiles, new_password
from liaison.security.tls import DevTls
from liaison.topics import Topics
from services.registry.app import RegistryServer
from services.registry.settings import RegistrySettings


@dataclass(frozen=True)
class SecuredBroker:
    broker: LocalBroker
    tls: DevTls
    files: CredentialFiles
    admin_password: SecretStr


@contextlib.contextmanager
def secured_broker() -> Iterator[SecuredBroker]:
    with tempfile.TemporaryDirectory(prefix="liaison-secured-") as home:
        tls, files = DevTls(Path(home) / "tls"), CredentialFiles(Path(home) / "secrets")
        password = new_password()
        broker = LocalBroker(BrokerConfig(home=Path(home) / "kafka", port=free_port(),
                                          controller_port=free_port(), heap_mb=512,
                                          security=BrokerSecurity(tls, password)))
        try:
            broker.start(timeout_s=90)
        except LocalBrokerError as exc:
            pytest.fail(f"could not start the secured broker: {exc}", pytrace=False)
        try:
            yield SecuredBroker(broker, tls, files, password)
        finally:
            broker.stop(grace_s=20)


@dataclass(frozen=True)
class Cluster:
    """The secured broker as one bus sees it: its topic prefix, its users."""

    broker: LocalBroker
    tls: DevTls
    files: CredentialFiles
    admin_password: SecretStr
    prefix: str

    @classmethod
    def on(cls, secured: SecuredBroker, prefix: str) -> Cluster:
        return cls(secured.broker, secured.tls, secured.files, secured.admin_password, prefix)

    @property
    def bootstrap(self) -> str:
        return self.broker.config.bootstrap

    def admin(self, **changes: Any) -> KafkaSettings:
        return self.broker.config.admin_settings().model_copy(update={"topic_prefix": self.prefix, **changes})

    def user(self, name: str) -> str:
        """The Kafka user of agency or service `name` on this bus: `sec.FR-PN`."""
        return username(Topics(self.prefix), name)

    def as_user(self, name: str, password: SecretStr | None = None, **changes: Any) -> KafkaSettings:
        """How agency or service `name` connects: its credential file, or the password given."""
        cred = self.files.read(self.user(name))
        secret = password or (cred.password if cred else SecretStr("none"))
        return self.admin(sasl_username=self.user(name), sasl_password=secret, **changes)


@contextlib.asynccontextmanager
async def registry_server(cluster: Cluster) -> AsyncIterator[RegistryServer]:
    """The registry as its own principal, HTTPS, writes for the admin only."""
    settings = RegistrySettings(**cluster.as_user(REGISTRY).model_dump(), registry_port=0, registry_auth=True,
                                registry_topic=schemas_topic(Topics(cluster.prefix)),
                                registry_writers=ADMIN, registry_auth_cache_s=0,
                                registry_tls_certfile=cluster.tls.server_cert,
                                registry_tls_keyfile=cluster.tls.server_key)
    async with RegistryServer(settings) as server:
        yield server
