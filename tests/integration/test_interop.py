"""A client no one here wrote: confluent-kafka's Avro serdes with our registry, through the broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from liaison.contract import ready_codec
from liaison.registry_client import RegistryClient
from liaison.schemas import load_catalog
from liaison.sdk import envelope, query
from services.registry.app import RegistryServer
from services.registry.settings import RegistrySettings
from tests.kafka_helpers import create_topics, read_until, unique_name


def _query(originator: str) -> dict[str, Any]:
    return query(envelope(originator, to=["DE-BKA"], case_id="CASE-7", tlp="AMBER",
                          handling=["H0", "H2"], categories=["VEHICLE"]),
                 "Is plate B-XY-123 known to you?", criteria={"plate": "B-XY-123"})


def _confluent_round_trip(bootstrap: str, registry_url: str, topic: str,
                          ours: bytes) -> tuple[dict[str, Any], bytes]:
    """In a thread: read our record with AvroDeserializer, write one with AvroSerializer."""
    with SchemaRegistryClient({"url": registry_url}) as sr:
        return _with_registry(sr, bootstrap, topic, ours)


def _with_registry(sr: SchemaRegistryClient, bootstrap: str, topic: str,
                   ours: bytes) -> tuple[dict[str, Any], bytes]:
    ctx = SerializationContext(topic, MessageField.VALUE)
    deserializer = AvroDeserializer(sr)
    theirs_read = deserializer(ours, ctx)
    # What an agency system does: its generated schema, the record-name subject, no auto-registration.
    serializer = AvroSerializer(sr, load_catalog().standalone_json("Query"),
                                conf={"auto.register.schemas": False,
                                      "subject.name.strategy": record_subject_name_strategy})
    theirs = _query("FR-PN")
    theirs["envelope"]["message_id"] = uuid.UUID(theirs["envelope"]["message_id"])
    encoded = serializer(theirs, SerializationContext(topic, MessageField.VALUE))
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, encoded)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("interop"),
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    try:
        for _ in range(100):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() != ours:
                value = msg.value()
                assert value is not None
                return theirs_read, value
        raise AssertionError("confluent consumer did not see the record it produced")
    finally:
        consumer.close()


async def test_confluent_serdes_and_our_codec_read_each_other(kafka_bootstrap: str) -> None:
    """Records our codec writes are read by AvroDeserializer, and AvroSerializer's by our codec."""
    topic = unique_name("interop")
    await create_topics(kafka_bootstrap, [topic])
    settings = RegistrySettings(bootstrap_servers=kafka_bootstrap, registry_port=0,
                                registry_topic=unique_name("_schemas"))
    async with RegistryServer(settings) as registry:
        async with RegistryClient(registry.url) as client:
            codec = await ready_codec(client)
        ours_record = _query("NL-KLPD")
        ours = codec.encode("Query", ours_record)
        theirs_read, theirs_bytes = await asyncio.to_thread(
            _confluent_round_trip, kafka_bootstrap, registry.url, topic, ours)

    assert theirs_read["question"] == ours_record["question"]
    assert str(theirs_read["envelope"]["message_id"]) == ours_record["envelope"]["message_id"]
    assert theirs_read["envelope"]["handling_codes"] == ["H0", "H2"]

    assert theirs_bytes[0] == 0
    assert int.from_bytes(theirs_bytes[1:5], "big") == codec.schema_id_of("Query")
    name, decoded = codec.decode(theirs_bytes)
    assert name == "Query"
    assert decoded["envelope"]["originator"] == "FR-PN"
    assert decoded["criteria"] == {"plate": "B-XY-123"}
    on_wire = await read_until(kafka_bootstrap, topic, count=1)
    assert on_wire[0].value == theirs_bytes
