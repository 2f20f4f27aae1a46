"""The pure parts of security: ACL tables, credential files, the development CA, registry auth rules."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import SecretStr

from liaison.core.settings import KafkaSettings, load
from liaison.errors import ConfigError
from liaison.security.acls import (
    DEADLINES,
    REGISTRY,
    ROUTER,
    Grant,
    agency_grants,
    check_bus_prefix,
    deadlines_grants,
    readme_table,
    registry_grants,
    router_grants,
    service_grants,
    username,
)
from liaison.security.credentials import Credential, CredentialFiles, Endpoints, new_password
from liaison.security.tls import DevTls
from liaison.topics import Topics
from services.registry.auth import Authenticator, BrokerLogin, decode_basic

TOPICS = Topics("p.")


def test_an_agency_gets_exactly_its_own_topics_and_groups() -> None:
    grants = agency_grants(TOPICS, "FR-PN")
    assert len(grants) == len(set(grants)) == 15
    writable = {g.name for g in grants if g.operation == "WRITE"}
    readable = {g.name for g in grants if g.operation == "READ" and g.resource == "TOPIC"}
    assert writable == {"p.alerts.out.FR-PN", "p.queries.out.FR-PN", "p.replies.out.FR-PN"}
    assert readable == {"p.alerts.in.FR-PN", "p.queries.in.FR-PN", "p.replies.in.FR-PN",
                        "p.receipts.in.FR-PN"}
    assert [g for g in grants if g.resource != "TOPIC"] == [Grant("GROUP", "p.FR-PN.", "PREFIXED", "READ")]
    assert all(g.pattern == "LITERAL" for g in grants if g.resource == "TOPIC")
    assert not set(grants) & set(agency_grants(TOPICS, "DE-BKA"))


def test_an_agency_prefix_cannot_reach_a_longer_code() -> None:
    """The group prefix ends with a dot, so FR-PN's does not cover a group of FR-PNX."""
    (group,) = [g for g in agency_grants(TOPICS, "FR-PN") if g.resource == "GROUP"]
    assert not "p.FR-PNX.inbox".startswith(group.name)


def test_services_get_what_their_code_uses_and_no_cluster_rights() -> None:
    router, deadlines = router_grants(TOPICS), deadlines_grants(TOPICS)
    assert Grant("TOPIC", "p.alerts.out.", "PREFIXED", "READ") in router
    assert Grant("TOPIC", "p.alerts.out.", "PREFIXED", "WRITE") not in router  # never writes an outbox
    assert Grant("TOPIC", "p.bus.audit", "LITERAL", "READ") not in router
    assert Grant("TRANSACTIONAL_ID", "p.liaison-router.", "PREFIXED", "WRITE") in router
    assert {g.name for g in deadlines if g.operation == "WRITE"} == {
        "p.bus.queries", "p.receipts.in.", "p.liaison-deadlines"}
    assert {g.name for g in registry_grants("_schemas")} == {"_schemas"}
    everyone = router + deadlines + registry_grants() + agency_grants(TOPICS, "FR-PN")
    assert [g for g in everyone if g.resource == "CLUSTER"] == []


def test_two_buses_on_one_cluster_share_no_user_group_id_or_topic() -> None:
    """Every name an ACL of bus `a.` holds carries `a.`: users, groups, transactional ids, topics."""
    a, b = Topics("a."), Topics("b.")
    assert [username(a, "FR-PN"), username(b, "FR-PN"), username(a, ROUTER)] == [
        "a.FR-PN", "b.FR-PN", "a.liaison-router"]
    for topics in (a, b):
        tables = [*agency_grants(topics, "FR-PN"), *(g for s in (ROUTER, DEADLINES, REGISTRY)
                                                     for g in service_grants(topics, s))]
        assert all(g.name.startswith(topics.prefix) for g in tables), topics
    assert not {g.name for g in agency_grants(a, "FR-PN")} & {g.name for g in agency_grants(b, "FR-PN")}
    assert Grant("GROUP", "a.liaison-router", "LITERAL", "READ") in service_grants(a, ROUTER)
    assert {g.name for g in service_grants(a, REGISTRY)} == {"a._schemas"}


def test_without_a_prefix_the_names_are_unchanged() -> None:
    """The README's table (no prefix) is what a single bus gets: FR-PN, liaison-router."""
    topics = Topics()
    assert username(topics, "FR-PN") == "FR-PN"
    assert Grant("GROUP", "FR-PN.", "PREFIXED", "READ") in agency_grants(topics, "FR-PN")
    assert Grant("TRANSACTIONAL_ID", "liaison-deadlines", "LITERAL", "WRITE") in deadlines_grants(topics)
    assert "| `<AGENCY>` | group | `<AGENCY>.*` | READ |" in readme_table()


@pytest.mark.parametrize("prefix", ["X", "staging-", "a.b"])
def test_a_secured_bus_prefix_must_end_with_a_dot(prefix: str) -> None:
    """Bus `X` would name FR-PN `XFR-PN`, the user of agency XFR-PN on an unprefixed bus."""
    with pytest.raises(ConfigError, match="must end with a dot"):
        check_bus_prefix(Topics(prefix))
    check_bus_prefix(Topics(prefix + "."))
    check_bus_prefix(Topics())


def test_a_credential_file_is_private_and_loads_as_settings(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    files = CredentialFiles(tmp_path / "secrets")
    secret = new_password()
    path = files.write(Credential("FR-PN", secret), Endpoints("127.0.0.1:9092", "https://127.0.0.1:8081",
                                                               tmp_path / "ca.pem"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert secret.get_secret_value() not in repr(files.read("FR-PN"))
    for name in [k for k in os.environ if k.startswith("LIAISON_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LIAISON_CREDENTIALS", str(path))
    settings = load(KafkaSettings)
    assert (settings.security_protocol, settings.sasl_username) == ("SASL_SSL", "FR-PN")
    assert settings.sasl_password == secret
    assert secret.get_secret_value() not in str(settings.safe_dump())
    monkeypatch.setenv("LIAISON_CREDENTIALS", str(tmp_path / "missing.env"))
    with pytest.raises(ConfigError, match="no credential file"):
        load(KafkaSettings)


def test_passwords_are_long_and_different() -> None:
    first, second = new_password().get_secret_value(), new_password().get_secret_value()
    assert first != second
    assert len(first) >= 32


def test_the_development_ca_signs_a_server_certificate_for_loopback(tmp_path: Path) -> None:
    tls = DevTls(tmp_path / "tls")
    assert tls.ensure()
    assert not tls.ensure()  # still valid: kept
    cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    for key in (tls.ca_key, tls.server_key, tls.server_bundle):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in tls.ca_cert.read_bytes()


@pytest.mark.parametrize(("header", "expected"), [
    ("Basic RlItUE46czNjcjN0", ("FR-PN", "s3cr3t")),
    ("basic RlItUE46YTpi", ("FR-PN", "a:b")),  # a colon in the password is kept
    ("Bearer abc", None),
    ("Basic not-base64!", None),
    ("Basic OnB3", None),  # no user
])
def test_basic_credentials_are_decoded_strictly(header: str, expected: tuple[str, str] | None) -> None:
    assert decode_basic(header) == expected


def test_the_registry_remembers_only_successful_logins() -> None:
    calls: list[tuple[str, str]] = []

    async def login(user: str, password: str) -> bool:
        calls.append((user, password))
        return password == "right"

    async def scenario() -> None:
        auth = Authenticator(login, writers=frozenset({"liaison-admin"}), cache_s=60)
        assert await auth.valid("FR-PN", "right")
        assert await auth.valid("FR-PN", "right")
        assert not await auth.valid("FR-PN", "wrong")
        assert not await auth.valid("FR-PN", "wrong")

    asyncio.run(scenario())
    assert calls == [("FR-PN", "right"), ("FR-PN", "wrong"), ("FR-PN", "wrong")]


def test_the_registry_of_one_bus_refuses_another_buses_users() -> None:
    """On a shared cluster, b.FR-PN's valid password does not open bus a's registry; the admin's does."""
    calls: list[str] = []

    async def login(user: str, password: str) -> bool:
        calls.append(user)
        return True

    async def scenario() -> None:
        auth = Authenticator(login, writers=frozenset({"liaison-admin"}), cache_s=60, bus_prefix="a.")
        assert not await auth.valid("b.FR-PN", "right")
        assert await auth.valid("a.FR-PN", "right")
        assert await auth.valid("liaison-admin", "right")

    asyncio.run(scenario())
    assert calls == ["a.FR-PN", "liaison-admin"]


def test_settings_give_the_registry_the_same_user(tmp_path: Path) -> None:
    settings = KafkaSettings(registry_url="https://127.0.0.1:8081", security_protocol="SASL_SSL",
                             sasl_username="FR-PN", sasl_password=SecretStr("pw"))
    assert settings.basic_auth() == ("FR-PN", "pw")
    assert settings.ssl_context() is not None
    assert KafkaSettings(registry_url="http://127.0.0.1:8081").ssl_context() is None


def test_registry_auth_refuses_to_run_without_sasl_to_the_broker() -> None:
    """Over plain text a "login" would succeed with any password: the setting is refused instead."""
    with pytest.raises(ConfigError, match="must use SASL"):
        BrokerLogin(KafkaSettings(security_protocol="PLAINTEXT"))
