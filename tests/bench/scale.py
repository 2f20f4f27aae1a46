"""`make bench-scale`: one secured local stack with 1,000 agencies (7,000 partitions) on one broker.

What it measures, in this order, with the stack of `liaison up` (broker, registry, router, deadlines as
processes, in a temporary folder on free ports):

1. `router_ready_small_s`: the router restarted with the demo directory (a dozen agencies): from its
   process's start (read from /proc) to the first probe delivered. The baseline of 3.
2. `onboard_s`: `onboarding.onboard_many` of SCALE_AGENCIES agencies at once (topics, SCRAM users,
   ACLs, quotas, directory entries), while the router runs.
3. `router_ready_s`: the router restarted again, now with every agency: start to first delivery;
   its RSS and sockets (/proc/<pid>/status VmRSS, fds that are sockets) once it owns every outbox.
4. `pause_s`: probes FR-PN -> DE-BKA at PROBE_RATE a second while one more agency is onboarded by
   the single-agency path; the longest send -> delivered time, next to the longest of a quiet window
   of the same length just before.
5. Throughput: SCALE_THROUGHPUT_MESSAGES alerts from 4 senders (the baseline), then as many spread
   over every onboarded agency (each to the next one): messages routed per second, and the ratio.
6. RSS flatness: more spread traffic until the router has routed SCALE_MESSAGES in all (counting
   from its start); its RSS when it passed a tenth of them (`rss_early_*`, with the count at which it
   was read) and at the end (`rss_end_*`), and their ratio; within SCALE_MAX_SECONDS, or the JSON
   says how far it got.

Traffic is written by the admin (a super user may write any outbox): the router reads outboxes, and
who wrote them makes no difference to its work. Results go to `.run/bench/scale.json`, with a table
of each figure next to its target.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from liaison import onboarding
from liaison.codec import Codec
from liaison.contract import ready_codec
from liaison.core.settings import KafkaSettings
from liaison.directory import ISO_COUNTRIES
from liaison.errors import LiaisonError
from liaison.local.broker import BrokerConfig, free_port, tail
from liaison.local.paths import run_dir
from liaison.local.process import is_alive, stop_pid
from liaison.local.stack import SERVICES, LocalStack, ServiceSpec
from liaison.registry_client import RegistryClient
from liaison.sdk import alert, envelope
from tests.bench.report import report
from tests.bench.router import _metric, _rss_peak_mb, _wait_until

AGENCIES = int(os.environ.get("SCALE_AGENCIES", "1000"))
MESSAGES = int(os.environ.get("SCALE_MESSAGES", "1000000"))
THROUGHPUT_MESSAGES = int(os.environ.get("SCALE_THROUGHPUT_MESSAGES", str(min(20_000, MESSAGES // 4))))
MAX_SECONDS = float(os.environ.get("SCALE_MAX_SECONDS", "2400"))
PROBE_RATE = 20.0
QUIET_WINDOW_S = 10.0
AFTER_REBALANCE_S = 5.0
BACKLOG = 30_000  # messages published but not routed yet, at most, in the long run
CHUNK = 5_000
PROBE_FROM, PROBE_TO = "FR-PN", "DE-BKA"
BASELINE_SENDERS = ("FR-PN", "NL-KLPD", "ES-CNP", "PL-KGP")
EXTRA = "IS-EXTRA"
ROUTER: ServiceSpec = next(spec for spec in SERVICES if spec.module == "services.router")

TARGETS = {  # figure -> (target, comparison)
    "onboard_s": (300.0, "<"),
    "router_ready_s": (30.0, "<"),
    "router_rss_mb": (250.0, "<"),
    "router_sockets": (50, "<"),
    "pause_s": (1.0, "<"),
    "rss_growth_ratio": (1.10, "<="),
}


# -- what /proc says of a process ----------------------------------------------------------------
def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return round(_status_kb(pid, "VmRSS") / 1024, 1)


def fds(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets)."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            links.append(os.readlink(fd))
    return len(links), sum(link.startswith("socket:") for link in links)


def started_at(pid: int) -> float:
    """The process's start as time.time(), to 10 ms (its age from /proc/<pid>/stat and /proc/uptime)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nofile_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return "/".join(line.split()[3:5])
    return "?"


# -- traffic -------------------------------------------------------------------------------------
def codes(count: int) -> list[str]:
    """`count` agency codes spread over the ISO countries: `AD-S0000`, `AE-S0001`..."""
    countries = sorted(ISO_COUNTRIES)
    return [f"{countries[i % len(countries)]}-S{i:04d}" for i in range(count)]


def alerts(codec: Codec, topics: Any, senders: Sequence[str], count: int, tag: str, *,
           recipients: Sequence[str] = ()) -> Iterator[tuple[str, bytes, bytes]]:
    """(outbox, key, value) of `count` diffusions, sender i % n to recipient i % n (or the next sender)."""
    n = len(senders)
    for i in range(count):
        sender = senders[i % n]
        to = recipients[i % len(recipients)] if recipients else senders[(i + 1) % n]
        msg = alert(envelope(sender, to=[to], case_id=f"{tag}-{i}", tlp="AMBER"), kind="DIFFUSION",
                    colour="BLUE")
        yield topics.outbox("Alert", sender), f"{tag}-{i}".encode(), codec.encode("Alert", msg)


@dataclass
class Probes:
    """Alerts PROBE_FROM -> PROBE_TO at a steady rate; when each was sent and delivered (time.time())."""

    settings: KafkaSettings
    codec: Codec
    sent: dict[bytes, float] = field(default_factory=dict)
    delivered: dict[bytes, float] = field(default_factory=dict)
    sending: bool = True
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, producer: AIOKafkaProducer) -> None:
        topics = self.settings.topics
        self._consumer = AIOKafkaConsumer(topics.inbox("Alert", PROBE_TO), **self.settings.kafka_kwargs(),
                                          group_id=None, isolation_level="read_committed",
                                          auto_offset_reset="latest", fetch_max_wait_ms=10)
        await self._consumer.start()
        await self._consumer.seek_to_end()
        self._tasks = [asyncio.create_task(self._send(producer)), asyncio.create_task(self._receive())]

    async def _send(self, producer: AIOKafkaProducer) -> None:
        started, i = time.perf_counter(), 0
        while True:
            if self.sending:
                (topic, key, value), = alerts(self.codec, self.settings.topics, [PROBE_FROM], 1,
                                              f"probe-{i}", recipients=[PROBE_TO])
                self.sent[key] = time.time()
                await producer.send(topic, value, key=key)
            i += 1
            await asyncio.sleep(max(0.0, started + i / PROBE_RATE - time.perf_counter()))

    async def _receive(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batches.values():
                for r in records:
                    if r.key is not None:
                        self.delivered.setdefault(r.key, now)

    def first_delivery_after(self, moment: float) -> float | None:
        return min((t for t in self.delivered.values() if t >= moment), default=None)

    def latencies(self, since: float, until: float) -> list[float]:
        """Send -> delivered of probes sent in [since, until); one not delivered counts until now."""
        now = time.time()
        return [self.delivered.get(key, now) - at for key, at in self.sent.items() if since <= at < until]

    async def settle(self, until: float, timeout_s: float = 60) -> None:
        """Wait until every probe sent before `until` is delivered (or the timeout passes)."""
        await poll(lambda: all(key in self.delivered for key, at in list(self.sent.items()) if at < until),
                   timeout_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._consumer.stop()


# -- the stack -----------------------------------------------------------------------------------
class Scale:
    def __init__(self, home: Path) -> None:
        self.stack = LocalStack(BrokerConfig(home=home / "kafka", port=free_port(),
                                             controller_port=free_port(), heap_mb=1024),
                                run=home, secure=True, registry_port=free_port(),
                                metrics_ports={spec.name: free_port() for spec in SERVICES})
        self.result: dict[str, Any] = {"agencies": AGENCIES, "messages": MESSAGES,
                                       "throughput_messages": THROUGHPUT_MESSAGES}

    @property
    def settings(self) -> KafkaSettings:
        return self.stack.admin_settings()

    @property
    def port(self) -> int:
        return self.stack.metrics_port(ROUTER)

    def router_pid(self) -> int:
        pid = self.stack.service_pid(ROUTER)
        if pid is None:
            raise RuntimeError(f"the router is not running; its log ends:\n{self.router_log()}")
        return pid

    def router_log(self) -> str:
        return tail(ROUTER.log_file(self.stack.run))

    def metric(self, name: str) -> float:
        return _metric(self.port, name)

    async def restart_router(self, probes: Probes) -> tuple[int, float]:
        """Stop the router by its pid and let `liaison up` start it again; (pid, seconds to ready)."""
        stop_pid(self.router_pid(), grace_s=30)
        await asyncio.to_thread(self.stack.up, timeout_s=180)
        pid = self.router_pid()
        start = started_at(pid)
        deadline = time.monotonic() + 300
        while (first := probes.first_delivery_after(start)) is None:
            if time.monotonic() > deadline or not is_alive(pid):
                raise RuntimeError("no probe was delivered within 300 s of the router's start; its log "
                                   f"ends:\n{self.router_log()}")
            await asyncio.sleep(0.05)
        return pid, round(first - start, 2)

    async def wait_assigned(self, partitions: int, timeout_s: float = 300) -> None:
        await _wait_until(lambda: self.metric("liaison_router_assigned_partitions") >= partitions, timeout_s)

    def sample(self, pid: int, name: str) -> None:
        self.result[f"router_rss_mb_{name}"] = rss_mb(pid)
        self.result[f"router_sockets_{name}"] = fds(pid)[1]

    async def throughput(self, producer: AIOKafkaProducer, messages: Iterator[tuple[str, bytes, bytes]],
                         count: int, pid: int) -> tuple[float, float]:
        """(messages routed per second, router CPU µs per message) for `count` messages published live."""
        target = self.metric("liaison_router_records_total") + count
        started, cpu = time.perf_counter(), cpu_s(pid)
        await _publish(producer, messages)
        await _wait_until(lambda: self.metric("liaison_router_records_total") >= target, 1800)
        seconds = time.perf_counter() - started
        return round(count / seconds), round((cpu_s(pid) - cpu) / count * 1e6, 1)

    async def run(self) -> None:
        stack = self.stack
        t = time.perf_counter()
        await asyncio.to_thread(stack.up, timeout_s=180)
        self.result["stack_up_s"] = round(time.perf_counter() - t, 1)
        settings = self.settings
        async with RegistryClient.from_settings(settings) as client:
            codec = await ready_codec(client)
        broker_pid = stack.broker.pid
        assert broker_pid is not None
        self.result["broker_nofile_limit"] = nofile_limit(broker_pid)
        small = len(onboarding.current_directory(await onboarding.read_entries(settings)).agencies)
        producer = AIOKafkaProducer(**settings.kafka_kwargs(), enable_idempotence=True, linger_ms=5,
                                    max_batch_size=256 * 1024)
        await producer.start()
        probes = Probes(settings, codec)
        await probes.start(producer)
        try:
            await self._measure(producer, probes, codec, small, broker_pid)
        finally:
            with contextlib.suppress(Exception):
                await probes.stop()
            await producer.stop()

    async def _measure(self, producer: AIOKafkaProducer, probes: Probes, codec: Codec, small: int,
                       broker_pid: int) -> None:
        r, settings, topics = self.result, self.settings, self.settings.topics
        access = onboarding.KafkaAccessControl(self.stack.files)

        # 1. ready with the demo directory: the baseline
        pid, r["router_ready_small_s"] = await self.restart_router(probes)
        await self.wait_assigned(small * 3)
        self.sample(pid, "small")
        print(f"router ready with {small} agencies in {r['router_ready_small_s']} s", flush=True)

        # 2. bulk onboarding, while the router runs
        agencies = codes(AGENCIES)
        requests = [onboarding.AgencyRequest(code, f"Agency {code}") for code in agencies]
        t, since = time.perf_counter(), time.time()
        outcomes = await onboarding.onboard_many(settings, requests, access=access)
        r["onboard_s"] = round(time.perf_counter() - t, 1)
        r["onboard_topics_created"] = sum(len(o.topics_created) for o in outcomes)
        r["onboard_ms_per_agency"] = round(r["onboard_s"] * 1000 / AGENCIES, 1)
        r["broker_open_files"] = fds(broker_pid)[0]
        print(f"onboarded {AGENCIES} agencies in {r['onboard_s']} s", flush=True)
        await self.wait_assigned((small + AGENCIES) * 3)
        r["probe_max_latency_during_bulk_s"] = round(max(probes.latencies(since, time.time())), 2)

        # 3. ready with every agency
        pid, r["router_ready_s"] = await self.restart_router(probes)
        t = time.perf_counter()
        await self.wait_assigned((small + AGENCIES) * 3)
        r["router_all_assigned_after_ready_s"] = round(time.perf_counter() - t, 1)
        self.sample(pid, "ready")
        print(f"router ready with {small + AGENCIES} agencies in {r['router_ready_s']} s", flush=True)

        # 4. the pause while one more agency is onboarded, next to a quiet window as long
        await asyncio.sleep(QUIET_WINDOW_S)  # probes flow meanwhile: the quiet window
        quiet = probes.latencies(time.time() - QUIET_WINDOW_S, time.time())
        assigned = self.metric("liaison_router_assigned_partitions")
        since, t = time.time(), time.perf_counter()
        extra = await onboarding.add_agency(settings, EXTRA, name="One more agency", country="IS",
                                            access=access)
        r["onboard_one_s"] = round(time.perf_counter() - t, 2)
        assert extra.directory == "added", extra.summary()
        await self.wait_assigned(int(assigned) + 3, timeout_s=120)
        r["new_outboxes_assigned_after_s"] = round(time.time() - since, 1)
        await asyncio.sleep(AFTER_REBALANCE_S)
        (topic, key, value), = alerts(codec, topics, [EXTRA], 1, "extra", recipients=[PROBE_TO])
        sent_extra = time.time()
        await producer.send_and_wait(topic, value, key=key)
        until = time.time()
        await probes.settle(until)
        await poll(lambda: key in probes.delivered, 60)
        r["new_agency_first_message_s"] = round(probes.delivered[key] - sent_extra, 2) \
            if key in probes.delivered else "not delivered within 60 s"
        during = probes.latencies(since, until)
        r["pause_s"] = round(max(during), 3)
        r["pause_quiet_window_max_s"] = round(max(quiet), 3)
        r["pause_ratio_vs_quiet"] = round(max(during) / max(quiet), 2)
        r["probe_p50_quiet_s"] = round(statistics.median(quiet), 3)
        probes.sending = False
        print(f"pause while onboarding one more agency: {r['pause_s']} s", flush=True)

        # 5. throughput: 4 senders, then every agency
        base, r["baseline_cpu_us_per_msg"] = await self.throughput(
            producer, alerts(codec, topics, BASELINE_SENDERS, THROUGHPUT_MESSAGES, "base",
                                  recipients=[PROBE_TO]),
            THROUGHPUT_MESSAGES, pid)
        spread, r["spread_cpu_us_per_msg"] = await self.throughput(
            producer, alerts(codec, topics, agencies, THROUGHPUT_MESSAGES, "spread"), THROUGHPUT_MESSAGES,
            pid)
        r["baseline_4_senders_msgs_per_s"], r["spread_msgs_per_s"] = base, spread
        r["spread_ratio_vs_4_senders"] = round(spread / base, 3)
        self.sample(pid, "after_throughput")
        print(f"throughput: {base} msg/s from 4 senders, {spread} msg/s from {AGENCIES}", flush=True)

        # 6. RSS as routed messages accumulate
        await self.long_run(producer, codec, agencies, pid)
        r["router_rss_peak_mb"] = round(_rss_peak_mb(pid), 1)
        summarise(r)
        r["broker_open_files_end"] = fds(broker_pid)[0]

    async def long_run(self, producer: AIOKafkaProducer, codec: Codec, agencies: list[str], pid: int) -> None:
        """Spread traffic, at most BACKLOG ahead of the router, until it routed MESSAGES or time is up."""
        r, topics = self.result, self.settings.topics
        marks = [MESSAGES // 10, MESSAGES]
        routed = self.metric("liaison_router_records_total")
        published = int(routed)
        messages = alerts(codec, topics, agencies, max(0, MESSAGES - published), "long")
        started = time.perf_counter()
        rss: dict[int, tuple[int, float]] = {}  # mark -> (routed when sampled, RSS)
        series: list[tuple[int, float]] = []
        while time.perf_counter() - started < MAX_SECONDS:
            routed = self.metric("liaison_router_records_total")
            for mark in marks:
                if routed >= mark and mark not in rss:
                    rss[mark] = int(routed), rss_mb(pid)
            if not series or routed - series[-1][0] >= MESSAGES / 20:
                series.append((int(routed), rss_mb(pid)))
            if routed >= MESSAGES:
                break
            if not is_alive(pid):
                r["router_exited"] = tail(ROUTER.log_file(self.stack.run))
                break
            if published - routed < BACKLOG and published < MESSAGES:
                chunk = [m for _, m in zip(range(CHUNK), messages, strict=False)]
                await _publish(producer, iter(chunk))
                published += len(chunk)
            else:
                await asyncio.sleep(0.5)
        r["long_run_routed"] = int(self.metric("liaison_router_records_total")) if is_alive(pid) else None
        r["long_run_s"] = round(time.perf_counter() - started)
        r["long_run_rss_mb_series"] = series
        if MESSAGES not in rss and series:  # stopped by SCALE_MAX_SECONDS: its last sample is the end
            rss[MESSAGES] = series[-1]
            r["rss_end_note"] = f"stopped after {MAX_SECONDS:.0f} s, before {MESSAGES} routed"
        for name, mark in zip(("early", "end"), marks, strict=True):
            if mark in rss:  # a small run may be past the first mark before this phase starts
                r[f"rss_{name}_routed"], r[f"rss_{name}_mb"] = rss[mark]


def summarise(r: dict[str, Any]) -> None:
    """The figures that have a target, from every sample taken: the largest RSS and socket count
    seen, and RSS at the end of the long run over RSS when it passed a tenth of SCALE_MESSAGES."""
    rss = [v for k, v in r.items() if k.startswith("router_rss_mb_")]
    rss += [mb for _, mb in r.get("long_run_rss_mb_series", [])]
    r["router_rss_mb"] = max([*rss, r.get("router_rss_peak_mb", 0.0)])
    r["router_sockets"] = max(v for k, v in r.items() if k.startswith("router_sockets_"))
    if "rss_early_mb" in r and "rss_end_mb" in r:
        r["rss_growth_ratio"] = round(r["rss_end_mb"] / r["rss_early_mb"], 3)


async def poll(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Whether `condition` held within `timeout_s`, checked in the event loop every `interval_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval_s)
    return True


async def _publish(producer: AIOKafkaProducer, messages: Iterator[tuple[str, bytes, bytes]]) -> None:
    futures = [await producer.send(topic, value, key=key) for topic, key, value in messages]
    await asyncio.gather(*futures)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure that has a target, next to it; `met` is None when the figure was not measured."""
    rows = []
    for name, (target, op) in TARGETS.items():
        value = result.get(name)
        met = None
        if isinstance(value, int | float):
            met = value < target if op == "<" else value <= target
        rows.append({"figure": name, "measured": value, "target": f"{op} {target:g}", "met": met})
    return rows


def raise_open_files() -> str:
    """Raise this process's soft open-file limit to its hard one, for the broker to inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return f"{soft}->{hard}" if soft < hard else str(soft)


def main() -> None:
    limit = raise_open_files()
    with tempfile.TemporaryDirectory(prefix="liaison-bench-scale-") as tmp:
        scale = Scale(Path(tmp))
        scale.result["bench_nofile"] = limit
        failed: str | None = None
        try:
            asyncio.run(scale.run())
        except (LiaisonError, RuntimeError, TimeoutError, OSError, AssertionError) as exc:
            failed = f"{type(exc).__name__}: {exc}"
            scale.result["failed"] = failed
            print(f"bench failed: {failed}", file=sys.stderr)
            print(f"--- router log\n{tail(ROUTER.log_file(Path(tmp)), 20)}", file=sys.stderr)
        finally:
            scale.stack.down()
    rows = targets(scale.result)
    report("scale", scale.result)
    path = run_dir() / "bench" / "scale.json"
    path.write_text(json.dumps({**scale.result, "targets": rows}, indent=2) + "\n")
    print(f"\n{'figure':<18}  {'measured':>10}  {'target':>8}  met")
    for row in rows:
        shown = {True: "yes", False: "NO", None: "-"}[row["met"]]
        print(f"{row['figure']:<18}  {row['measured']!s:>10}  {row['target']:>8}  {shown}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
