"""`make bench-audit`: `liaison case` and `liaison trace` on an audit trail of AUDIT_RECORDS records
(default 1,000,000), on a broker of its own.

The trail is written straight to `bus.audit` with a plain producer (librdkafka), shaped as the router
writes it: alerts, queries and replies in cases that stay open for months, each decided for one to
four recipients (some refused, some redacted), replies answering the case's queries, onward copies,
one message in twenty without a case; their timestamps spread over two years, the newest now. A few
hundred dead letters go to `bus.deadletter`.

Then each question as an operator asks it, the CLI in its own process (wall time, Python's start
included: `cli_start_s` is that start alone; its bytecode is cached in the bench's temporary folder,
as an installed CLI's is, even where PYTHONDONTWRITEBYTECODE is set):

1. `since_window_s`: `case --since 1h --no-index` about the newest case, with no index yet: only
   the last hour is read.
2. `case_first_s`: the first `case`, which builds the index.
3. `case_again_s`, `case_other_s`, `trace_s`, `since_indexed_s`: the index up to date.
4. `scan_s`, `trace_scan_s`: `--no-index`, the whole topics from offset 0 (the old behaviour).
5. `case_after_append_s`: `case` after AUDIT_APPEND new records.

In-process (no Python start): `*_records_read`, what each read from Kafka, and how long it took:
`index_query` (nothing new), `window_1h` (the last hour, no index), `index_after_append` (after
AUDIT_APPEND more records).
Results go to `.run/bench/audit.json`, with the ratios to the scan.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from liaison.audit_index import find_case, index_folder
from liaison.audit_view import EVER, Reading, Window
from liaison.codec import Codec, random_uuid
from liaison.core.settings import KafkaSettings
from liaison.sdk import envelope, query
from tests.audit_records import Record, audit_key, audit_record, dead_letter
from tests.bench.report import report
from tests.bench.router import on_own_broker
from tests.bus_harness import running_bus
from tests.integration.test_cli_common import Result, cli, cli_env

RECORDS = int(os.environ.get("AUDIT_RECORDS", "1000000"))
APPEND = int(os.environ.get("AUDIT_APPEND", "10000"))
DEAD_LETTERS = 500
PARTITIONS = 3
TARGET_S = 2.0
HOUR, DAY = 3_600_000, 86_400_000
SPAN_MS = 730 * DAY
OPEN_CASES = 5_000
AGENCIES = ("FR-PN", "DE-BKA", "IT-PS", "ES-CNP", "NL-KLPD", "PL-KGP", "BE-PF", "AT-BK", "PT-PJ",
            "SE-NOA", "EU-EUROPOL")


@dataclass
class Case:
    case_id: str
    originator: str
    queries: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)


@dataclass
class Trail:
    """Audit records in time order, in cases that stay open a long while; remembers a case and a
    query from the middle of the trail, which the questions ask about."""

    rng: random.Random = field(default_factory=lambda: random.Random(20_250_301))
    sample_case: str = ""
    sample_query: str = ""
    other_case: str = ""
    last_case: str = ""  # the case of the newest record: one an operator asks about with --since
    _cases: int = 0
    _pool: list[Case] = field(default_factory=list)

    def _new_case(self) -> Case:
        self._cases += 1
        return Case(f"CASE-{self._cases:07d}", self.rng.choice(AGENCIES))

    def records(self, count: int, *, first_at: int, last_at: int) -> Iterator[Record]:
        """`count` records, their timestamps spread evenly from `first_at` to `last_at`."""
        rng, pool = self.rng, self._pool
        pool += [self._new_case() for _ in range(OPEN_CASES - len(pool))]
        written = 0
        while written < count:
            at = first_at + (last_at - first_at) * written // count
            slot = rng.randrange(len(pool))
            if rng.random() < 0.1:
                pool[slot] = self._new_case()
            case = pool[slot]
            kind = rng.choices(("Alert", "Query", "Reply"), (50, 25, 25))[0]
            if kind == "Reply" and not case.queries:
                kind = "Query"
            message_id = random_uuid()
            sender = case.originator if kind != "Reply" else rng.choice(
                [a for a in AGENCIES if a != case.originator])
            case_id = None if rng.random() < 0.05 else case.case_id
            correlation = rng.choice(case.queries) if kind == "Reply" else None
            derived = rng.choice(case.alerts) if kind == "Alert" and case.alerts and rng.random() < 0.1 \
                else None
            if kind == "Reply":
                recipients = [case.originator]
            else:
                recipients = rng.sample([a for a in AGENCIES if a != sender], rng.randint(1, 4))
            for recipient in recipients:
                decision = rng.choices(("DELIVERED", "DENIED", "REDACTED"), (85, 10, 5))[0]
                denied = decision == "DENIED"
                yield audit_record(
                    message_id, case_id=case_id, decided_at=at, originator=sender, recipient=recipient,
                    decision=decision, message_type=kind, correlation_id=correlation, derived_from=derived,
                    reason_code="RESTRICTED_BY_ORIGINATOR" if denied else None,
                    reason="The originator restricted the message to other agencies." if denied else None,
                    offset=written)
                written += 1
            if case_id is not None:
                self.last_case = case_id
            if kind == "Query" and case_id is not None:
                case.queries.append(message_id)
            if kind == "Alert":
                case.alerts.append(message_id)
            if not self.sample_case and written >= count // 2 and case_id is not None and case.queries:
                self.sample_case, self.sample_query = case.case_id, case.queries[0]
                self.other_case = pool[(slot + 1) % len(pool)].case_id


def produce(settings: KafkaSettings, codec: Codec, topic: str, records: Iterator[Record]) -> int:
    """Write the records as fast as librdkafka takes them; the number written."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 50,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 500_000,
                         "partitioner": "murmur2_random", "acks": 1, "log_level": 4})
    written = 0
    for record in records:
        value = codec.encode("AuditRecord", record)
        while True:
            try:
                producer.produce(topic, value, key=audit_key(record), timestamp=record["decided_at"])
                break
            except BufferError:
                producer.poll(0.05)
        written += 1
        if written % 10_000 == 0:
            producer.poll(0)
    if producer.flush(300):
        raise RuntimeError("the producer did not deliver every record within 300 s")
    return written


@dataclass
class Bench:
    settings: KafkaSettings
    codec: Codec
    state_dir: Path
    result: dict[str, Any] = field(default_factory=dict)

    async def ask(self, name: str, *args: str) -> Result:
        """One question through the CLI, timed."""
        env = cli_env(self.settings, LIAISON_STATE_DIR=str(self.state_dir),
                      PYTHONPYCACHEPREFIX=str(self.state_dir.parent / "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once, not at every start
        if args[0] in ("case", "trace"):
            args = (*args, "--json", "--timeout", "7200")
        done = await cli(*args, env=env, timeout_s=7200)
        if done.code not in (0, 1) or "Traceback" in done.err:
            raise RuntimeError(f"liaison {' '.join(args)}: exit {done.code}: {done.err.strip()[-500:]}")
        self.result[name] = round(done.seconds, 3)
        print(f"{name}: {done.seconds:.2f} s", flush=True)
        return done

    async def in_process(self, name: str, case_id: str, *, window: Window = EVER,
                         folder: Path | None) -> list[Record]:
        reading = Reading()
        started = time.perf_counter()
        rows = await find_case(self.settings, case_id, folder=folder, window=window, reading=reading)
        self.result[f"{name}_s"] = round(time.perf_counter() - started, 3)
        self.result[f"{name}_records_read"] = reading.records_read
        self.result[f"{name}_read_from"] = reading.how
        return rows


async def measure(bootstrap: str, workdir: Path) -> dict[str, Any]:
    async with running_bus(bootstrap, router=False, partitions=PARTITIONS) as bus:
        bench = Bench(bus.settings, bus.codec, workdir / "state")
        now = int(time.time() * 1000)
        trail = Trail()
        started = time.perf_counter()
        written = await asyncio.to_thread(produce, bus.settings, bus.codec, bus.topics.audit,
                                          trail.records(RECORDS, first_at=now - SPAN_MS, last_at=now))
        await asyncio.to_thread(_dead_letters, bus.settings, bus.codec, bus.topics, now)
        r = bench.result
        r.update(records=written, partitions=PARTITIONS, dead_letters=DEAD_LETTERS,
                 write_s=round(time.perf_counter() - started, 1), case=trail.sample_case,
                 query=trail.sample_query, recent_case=trail.last_case)
        print(f"wrote {written} audit records in {r['write_s']} s; case {trail.sample_case}", flush=True)
        case, other, query_id, last = trail.sample_case, trail.other_case, trail.sample_query, trail.last_case

        await bench.ask("cli_start_cold_s", "version")  # compiles the bytecode once
        await bench.ask("cli_start_s", "version")
        window = await bench.ask("since_window_s", "case", last, "--since", "1h", "--no-index")
        first = await bench.ask("case_first_s", "case", case)
        again = await bench.ask("case_again_s", "case", case)
        await bench.ask("case_other_s", "case", other)
        traced = await bench.ask("trace_s", "trace", query_id)
        indexed_window = await bench.ask("since_indexed_s", "case", last, "--since", "1h")
        scanned = await bench.ask("scan_s", "case", case, "--no-index")
        trace_scanned = await bench.ask("trace_scan_s", "trace", query_id, "--no-index")
        r["case_rows"] = len(first.json())
        r["same_rows"] = first.json() == again.json() == scanned.json()
        r["same_trace"] = traced.json() == trace_scanned.json()
        r["since_rows"] = len(window.json())
        r["same_since_rows"] = window.json() == indexed_window.json()

        folder = index_folder(bench.state_dir, bus.settings)
        r["index_mb"] = round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1)
        await bench.in_process("index_query", case, folder=folder)
        await bench.in_process("window_1h", last, folder=None, window=Window(now - HOUR))

        appended = await asyncio.to_thread(
            produce, bus.settings, bus.codec, bus.topics.audit,
            trail.records(APPEND, first_at=now, last_at=now + 1000))
        r["appended"] = appended
        after = await bench.ask("case_after_append_s", "case", case)
        r["case_rows_after_append"] = len(after.json())
        await asyncio.to_thread(produce, bus.settings, bus.codec, bus.topics.audit,
                                trail.records(APPEND, first_at=now + 1000, last_at=now + 2000))
        await bench.in_process("index_after_append", case, folder=folder)

        scan = r["scan_s"]
        r.update(
            scan_over_case_again=round(scan / r["case_again_s"], 1),
            trace_scan_over_trace=round(r["trace_scan_s"] / r["trace_s"], 1),
            scan_over_since_window=round(scan / r["since_window_s"], 1),
            case_first_over_scan=round(r["case_first_s"] / scan, 2),
            target_s=TARGET_S,
            within_target=all(r[k] < TARGET_S for k in ("case_again_s", "case_other_s", "trace_s",
                                                          "since_window_s", "since_indexed_s")),
        )
        return r


def _dead_letters(settings: KafkaSettings, codec: Codec, topics: Any, now: int) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "log_level": 4})
    for i in range(DEAD_LETTERS):
        at = now - SPAN_MS + SPAN_MS * i // DEAD_LETTERS
        refused = query(envelope("FR-PN", to=["DE-BKA"], case_id=f"CASE-DL-{i}"), "Known?")
        letter = dead_letter(codec.encode("Query", refused), failed_at=at,
                             outbox=topics.outbox("Query", "IT-PS"))
        producer.produce(topics.deadletter, codec.encode("DeadLetter", letter), timestamp=at)
    producer.flush(60)


def main() -> None:
    report("audit", on_own_broker(measure))


if __name__ == "__main__":
    main()
