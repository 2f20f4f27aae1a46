"""Client quotas of agency users on a secured broker: set at onboarding, changed by the operator,
read back from the broker, and felt by a producer that goes past its rate.

Uses the secured broker of `test_security` (a module of its own here) and its bus `sec.`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from liaison import onboarding
from liaison.core.settings import KafkaSettings
from liaison.security.admin import SecurityAdminError, librdkafka_config
from liaison.security.credentials import ADMIN, Credential, Endpoints
from liaison.security.quotas import Quota, QuotaAdmin
from tests.integration.test_security import PREFIX, Cluster, _send
from tests.integration.test_security import cluster as secured_cluster  # noqa: F401  # a fixture, by this name
from tests.kafka_helpers import eventually

MIB = 1024 * 1024
DEFAULTS = Quota(MIB, 4 * MIB, 50.0)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Cluster:
    found: Cluster = request.getfixturevalue("secured_cluster")
    return found


def _as(cluster: Cluster, user: str) -> KafkaSettings:
    """How `user` of bus `sec.` connects, with its credential file."""
    credential = cluster.files.read(user)
    assert credential is not None, user
    return cluster.admin(sasl_username=user, sasl_password=credential.password)


def _control(cluster: Cluster) -> onboarding.KafkaAccessControl:
    return onboarding.KafkaAccessControl(cluster.files, quota_defaults=DEFAULTS)


async def _quota_of(settings: KafkaSettings, user: str, wanted: Quota) -> Quota:
    """The user's quotas once the broker shows `wanted` (a change reaches every broker a moment later)."""
    async with QuotaAdmin(settings) as quotas:
        return await eventually(lambda: quotas.describe(user), lambda q: q == wanted, timeout_s=15)


async def test_onboarding_sets_defaults_suspension_keeps_them_removal_deletes_them(cluster: Cluster) -> None:
    """add sets the defaults; an operator's value survives add, suspend and resume; remove deletes all."""
    settings, control = cluster.admin(), _control(cluster)
    added = await onboarding.add_agency(settings, "SE-QTA", name="Quota test", country="SE", access=control)
    assert f"quotas of {PREFIX}SE-QTA: produce 1048576 B/s, fetch 4194304 B/s, requests 50% (defaults set)" \
        in added.access
    await _quota_of(settings, f"{PREFIX}SE-QTA", DEFAULTS)

    view = await onboarding.agency_quota(settings, "SE-QTA", Quota(produce_bytes=2 * MIB), access=control)
    assert (view.user, view.changed) == (f"{PREFIX}SE-QTA", ("producer_byte_rate",))
    assert view.quota == Quota(2 * MIB, 4 * MIB, 50.0)
    await _quota_of(settings, f"{PREFIX}SE-QTA", view.quota)

    again = await onboarding.add_agency(settings, "SE-QTA", name="Quota test", country="SE", access=control)
    assert any("(kept:" in line and "produce 2097152 B/s" in line for line in again.access)
    await onboarding.set_status(settings, "SE-QTA", "SUSPENDED", access=control)
    await onboarding.set_status(settings, "SE-QTA", "ACTIVE", access=control)
    await _quota_of(settings, f"{PREFIX}SE-QTA", view.quota)

    removed = await onboarding.remove_agency(settings, "SE-QTA", access=control)
    assert f"quotas of {PREFIX}SE-QTA deleted" in removed.access
    await _quota_of(settings, f"{PREFIX}SE-QTA", Quota())


async def test_an_agency_can_neither_read_nor_raise_its_own_quota(cluster: Cluster) -> None:
    """Quotas need cluster rights: the broker answers the agency CLUSTER_AUTHORIZATION_FAILED."""
    user = f"{PREFIX}NL-KLPD"
    async with QuotaAdmin(cluster.admin()) as admin:
        before = await admin.describe(user)
    assert before.produce_bytes is not None  # onboarded with a quota (by the fixture's `make up` path)
    agency = _as(cluster, user)
    await _send(agency, agency.topics.outbox("Alert", "NL-KLPD"))  # the control case: it is logged in
    async with QuotaAdmin(agency) as own:
        with pytest.raises(SecurityAdminError, match="CLUSTER_AUTHORIZATION_FAILED"):
            await own.apply(user, Quota(produce_bytes=100 * MIB))
        with pytest.raises(SecurityAdminError, match="CLUSTER_AUTHORIZATION_FAILED"):
            await own.describe(user)
    async with QuotaAdmin(cluster.admin()) as admin:
        assert await admin.describe(user) == before


def _produce(settings: KafkaSettings, topic: str, count: int, size: int) -> tuple[list[float], list[float]]:
    """Send `count` records of `size` bytes, one request at a time; all must be delivered.

    Returns when each was acknowledged and when the broker reported a throttle time above 0.
    """
    throttled: list[float] = []
    acked: list[float] = []
    errors: list[object] = []

    def delivered(err: object, _msg: object) -> None:
        (errors if err else acked).append(err or time.monotonic())

    producer = Producer(librdkafka_config(settings) | {
        "linger.ms": 0, "batch.size": size + 192, "max.in.flight": 1,
        "throttle_cb": lambda event: throttled.append(time.monotonic()) if event.throttle_time > 0 else None})
    for _ in range(count):
        producer.produce(topic, b"x" * size, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []
    return acked, throttled


async def test_past_its_produce_quota_an_agency_is_slowed_to_about_the_rate(cluster: Cluster) -> None:
    """At 16 KiB/s: once the broker starts reporting throttle times, about 16 KiB/s get through.

    The broker lets a client run ahead by about its quota window (10 s of rate), then delays its
    responses and reports the delay (`throttle_time_ms`): nothing is refused, all is delivered.
    Unthrottled, the same records take a fraction of a second.
    """
    settings, control, rate = cluster.admin(), _control(cluster), 16 * 1024
    await onboarding.add_agency(settings, "SE-THR", name="Throttle test", country="SE", access=control)
    await onboarding.agency_quota(settings, "SE-THR", Quota(produce_bytes=rate), access=control)
    await _quota_of(settings, f"{PREFIX}SE-THR", DEFAULTS.merged(Quota(produce_bytes=rate)))

    count, size = 32, 8000  # 256000 bytes, 15.6 s of rate: some 5 s past the window's allowance
    acked, throttled = await asyncio.to_thread(
        _produce, _as(cluster, f"{PREFIX}SE-THR"), settings.topics.outbox("Alert", "SE-THR"), count, size)
    assert throttled, "the broker reported no throttle time"
    after = [t for t in acked if t > throttled[0]]
    assert len(after) >= 4, (len(after), len(acked))
    held_to = len(after) * size / (after[-1] - throttled[0])
    assert held_to < 3 * rate, f"{held_to:.0f} B/s over {after[-1] - throttled[0]:.1f} s once throttled"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liaison.cli.main", "agency", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_the_operator_shows_and_changes_quotas_from_the_cli(cluster: Cluster, tmp_path: Path) -> None:
    """`agency quota` prints or changes; `agency show` has them too; wrong values exit 2 in one line."""
    admin_file = cluster.files.path(ADMIN)
    cluster.files.write(Credential(ADMIN, cluster.admin_password),
                        Endpoints(cluster.bootstrap, "https://127.0.0.1:1", cluster.tls.ca_cert))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIAISON_")}
    env.update({"LIAISON_CREDENTIALS": str(admin_file), "LIAISON_TOPIC_PREFIX": PREFIX,
                "LIAISON_RUN_DIR": str(tmp_path), "LIAISON_AGENCY_REQUEST_PERCENTAGE": "25"})
    added = _cli(env, "add", "DK-QTA", "--country", "DK", "--name", "Quota CLI", "--print-credential")
    assert added.returncode == 0, added.stderr
    assert "requests 25% (defaults set)" in added.stdout

    changed = _cli(env, "quota", "DK-QTA", "--produce-bytes", "2097152", "--fetch-bytes", "8388608")
    assert changed.returncode == 0, changed.stderr
    assert (f"DK-QTA: quotas of {PREFIX}DK-QTA changed (producer_byte_rate, consumer_byte_rate)"
            in changed.stdout)
    assert "2097152 bytes/s" in changed.stdout

    wanted = {"producer_byte_rate": 2097152, "consumer_byte_rate": 8388608, "request_percentage": 25.0}
    deadline = time.monotonic() + 15
    while True:  # the broker that took the change shows it a moment later
        shown = _cli(env, "quota", "DK-QTA", "--json")
        assert shown.returncode == 0, shown.stderr
        if json.loads(shown.stdout)["quotas"] == wanted or time.monotonic() > deadline:
            break
    assert json.loads(shown.stdout)["quotas"] == wanted
    view = _cli(env, "show", "DK-QTA", "--json")
    assert json.loads(view.stdout)["quotas"] == wanted
    assert json.loads(view.stdout)["user"] == f"{PREFIX}DK-QTA"

    for args in (["--produce-bytes", "0"], ["--fetch-bytes", "1000"], ["--request-percentage", "lots"]):
        wrong = _cli(env, "quota", "DK-QTA", *args)
        assert wrong.returncode == 2, args
        assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        assert "Traceback" not in wrong.stderr
    unknown = _cli(env, "quota", "DK-NOBODY", "--produce-bytes", "4096")
    assert unknown.returncode == 1
    assert "not in the directory" in unknown.stderr
    bad_default = _cli({**env, "LIAISON_AGENCY_FETCH_BYTE_RATE": "100"}, "resume", "DK-QTA")
    assert bad_default.returncode == 2
    assert "LIAISON_AGENCY_FETCH_BYTE_RATE" in bad_default.stderr
