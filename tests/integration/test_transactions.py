"""What the bus relies on: consume -> produce -> send offsets -> commit is exactly-once on this broker."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.kafka_helpers import create_topics, eventually, read_until, unique_name


async def _fill(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value)
        await producer.flush()
    finally:
        await producer.stop()


async def test_transactional_pipe_commits_once_and_hides_aborted(kafka_bootstrap: str) -> None:
    """Committed batches are seen once by read_committed readers; an aborted batch never is."""
    source, sink, group = unique_name("t.src"), unique_name("t.sink"), unique_name("t.grp")
    await create_topics(kafka_bootstrap, [source, sink])
    values = [f"m{i}".encode() for i in range(30)]
    await _fill(kafka_bootstrap, source, values)

    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("t.txn"),
        enable_idempotence=True,
    )
    await consumer.start()
    await producer.start()
    try:
        # An aborted transaction first: its records must stay invisible to read_committed readers.
        await producer.begin_transaction()
        for value in values[:3]:
            await producer.send(sink, b"aborted-" + value)
        await producer.abort_transaction()

        tp = TopicPartition(source, 0)
        seen = 0
        while seen < len(values):
            batch = (await consumer.getmany(tp, timeout_ms=1000, max_records=10)).get(tp, [])
            if not batch:
                continue
            async with producer.transaction():
                for rec in batch:
                    await producer.send(sink, rec.value)
                await producer.send_offsets_to_transaction({tp: batch[-1].offset + 1}, group)
            seen += len(batch)
        # The group coordinator applies transactional offsets once the commit marker is written.
        await eventually(lambda: consumer.committed(tp), lambda off: off == len(values))
    finally:
        await producer.stop()
        await consumer.stop()

    committed = await read_until(kafka_bootstrap, sink, count=len(values), settle_s=1.0)
    assert [r.value for r in committed] == values

    # read_uncommitted shows the aborted records: the isolation level is what hides them.
    raw = await read_until(kafka_bootstrap, sink, count=len(values) + 3,
                           isolation_level="read_uncommitted", settle_s=0.5)
    aborted = [r.value for r in raw if r.value and r.value.startswith(b"aborted-")]
    assert aborted == [b"aborted-" + v for v in values[:3]]
