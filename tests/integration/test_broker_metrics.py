"""The JMX exporter on a real broker: it serves every metric the alert rules and the dashboard read."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from liaison.errors import LocalBrokerError
from liaison.local.broker import BrokerConfig, LocalBroker, free_port
from tests.integration.test_metrics import Samples, scrape, value
from tests.kafka_helpers import create_topics, eventually, unique_name
from tests.monitoring import broker_metric_names


@dataclass(frozen=True)
class ExportingBroker:
    bootstrap: str
    metrics_url: str


@pytest.fixture(scope="module")
def broker() -> Iterator[ExportingBroker]:
    """A broker of its own (the session's has no exporter), in a temporary folder, stopped by its pid."""
    with tempfile.TemporaryDirectory(prefix="liaison-test-jmx-") as home:
        exporter_port = free_port()
        local = LocalBroker(BrokerConfig(home=Path(home), port=free_port(), controller_port=free_port(),
                                         heap_mb=384, jmx_exporter_port=exporter_port))
        try:
            local.start(timeout_s=90)
        except LocalBrokerError as exc:
            pytest.fail(f"could not start the broker with its JMX exporter: {exc}", pytrace=False)
        try:
            yield ExportingBroker(local.config.bootstrap, f"http://127.0.0.1:{exporter_port}/metrics")
        finally:
            assert local.stop(grace_s=20)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def test_every_metric_of_the_alerts_and_the_dashboard_is_served(broker: ExportingBroker) -> None:
    """A renamed MBean or a wrong rule would silently disable an alert: each name must be scraped."""
    wanted = broker_metric_names()
    assert len(wanted) >= 10

    async def missing() -> set[str]:
        return wanted - names(await scrape(broker.metrics_url))

    assert await eventually(missing, lambda left: not left, timeout_s=30) == set()


async def test_a_healthy_single_node_cluster_raises_no_broker_alert(broker: ExportingBroker) -> None:
    """One active controller, one registered broker; no partition offline, under-replicated, under min ISR."""
    samples = await eventually(
        lambda: scrape(broker.metrics_url),
        lambda now: value(now, "kafka_controller_kafkacontroller_activebrokercount") == 1, timeout_s=30)
    assert value(samples, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value(samples, "kafka_controller_kafkacontroller_activebrokercount") == 1
    assert value(samples, "kafka_controller_kafkacontroller_fencedbrokercount") == 0
    assert value(samples, "kafka_controller_kafkacontroller_offlinepartitionscount") == 0
    assert value(samples, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert value(samples, "kafka_server_replicamanager_underminisrpartitioncount") == 0
    assert value(samples, "kafka_server_replicamanager_isrshrinks_total") == 0


async def test_messages_in_counts_the_records_appended_broker_wide_only(broker: ExportingBroker) -> None:
    """Producing raises the broker-wide counters and the partition counts; no per-topic series appears."""
    before = await scrape(broker.metrics_url)
    topic = unique_name("jmx")
    await create_topics(broker.bootstrap, [topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, f"record {i}".encode(), partition=i % 2)
    finally:
        await producer.stop()

    def grown(name: str) -> float:
        return (value(before, name) or 0) + 20

    after = await eventually(
        lambda: scrape(broker.metrics_url),
        lambda now: (value(now, "kafka_server_brokertopicmetrics_messagesin_total") or 0)
        >= grown("kafka_server_brokertopicmetrics_messagesin_total")
        and (value(now, "kafka_server_replicamanager_leadercount") or 0)
        >= (value(before, "kafka_server_replicamanager_leadercount") or 0) + 2,
        timeout_s=30)
    assert value(after, "kafka_server_brokertopicmetrics_messagesin_total") == \
        grown("kafka_server_brokertopicmetrics_messagesin_total")
    assert (value(after, "kafka_server_brokertopicmetrics_bytesin_total") or 0) > \
        (value(before, "kafka_server_brokertopicmetrics_bytesin_total") or 0) + 20 * len("record 0")
    kafka_labels = {key for (name, labels) in after if name.startswith("kafka_") for key, _ in labels}
    assert kafka_labels == set()  # broker-wide totals only: no topic, partition or client labels
