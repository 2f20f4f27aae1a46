"""The router's CPU per record, without a broker: `python -m tests.bench.pipeline_cpu [--profile]`.

Builds a `Pipeline` with the real codec, policy, directory and router state (over memory stores),
and routes pre-encoded alerts of each benchmark size (tests/bench/messages.py) as the router does a batch:
read each consumed record (`Source.of` on real confluent-kafka Messages), decode, check the state
for unseen ids and references, `handle`, then serialise the state updates the transaction carries.
Producing is left out: that is librdkafka's work, not Python's. Prints µs per record per stage,
best of a few rounds (the machine is shared, so the best round is the least disturbed one).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time

from confluent_kafka import Message

from liaison.core.logs import configure_logging
from liaison.directory import Directory
from liaison.errors import DecodeError
from liaison.local.paths import REPO_ROOT
from liaison.policy import load_policy
from liaison.table import json_bytes
from liaison.topics import Topics
from services.router.pipeline import BatchOutcome, Decoded, Pipeline, Source
from services.router.state import RouterState
from tests.bench.messages import SIZES
from tests.offline_codec import offline_codec
from tests.offline_state import commit, offline_state

SENDERS = ("FR-PN", "NL-KLPD", "ES-CNP", "PL-KGP")
RECIPIENT = "DE-BKA"
BATCH = 1000


def pipeline(state: RouterState) -> Pipeline:
    engine = load_policy(REPO_ROOT / "deploy" / "policy.yaml").compile(
        Directory.from_file(REPO_ROOT / "deploy" / "directory.yaml"))
    return Pipeline(offline_codec(), lambda: engine, state, Topics())


def consumed(p: Pipeline, size: str, count: int, tag: str) -> list[Message]:
    """`count` alerts of one size as the consumer hands them over, spread over the senders."""
    build, out = SIZES[size], []
    for i in range(count):
        sender = SENDERS[i % len(SENDERS)]
        value = p.codec.encode("Alert", build(sender, RECIPIENT, f"{tag}-{i}"))
        out.append(Message(topic=p.topics.outbox("Alert", sender), partition=i % 2, offset=i,
                           key=f"{tag}-{i}".encode(), value=value, headers=None,
                           timestamp=(1, int(time.time() * 1000))))
    return out


def _decode(p: Pipeline, src: Source) -> Decoded:
    try:
        return p.decode(src)
    except DecodeError as exc:
        return exc


def route_batch(p: Pipeline, state: RouterState, messages: list[Message]) -> BatchOutcome:
    """What the router's loop does with one consumed batch, short of Kafka I/O."""
    sources = [Source.of(m) for m in messages]
    decoded = [_decode(p, src) for src in sources]
    out = BatchOutcome()
    if any(p.unseen_id(item) for item in decoded):
        for item in decoded:
            p.unknown_refs(item, out)
    for src, item in zip(sources, decoded, strict=True):
        p.unknown_refs(item, out)
        p.handle(src, item, out)
    for updates in (out.routed, out.consents, out.queries):
        for k, v in updates.items():
            k.encode(), json_bytes(v)
    commit(state, out)
    return out


def run(size: str, count: int, rounds: int) -> dict[str, float]:
    """µs per record: best and median of `rounds`, each over fresh records (new ids)."""
    state = offline_state()
    p = pipeline(state)
    spans = []
    for r in range(rounds):
        batches = [consumed(p, size, BATCH, f"{size}-{r}-{b}") for b in range(max(1, count // BATCH))]
        started = time.process_time()
        outputs = sum(len(route_batch(p, state, batch).outputs) for batch in batches)
        spans.append((time.process_time() - started) / (len(batches) * BATCH) * 1e6)
    records = len(batches) * BATCH
    return {"best_us": round(min(spans), 1), "median_us": round(statistics.median(spans), 1),
            "outputs_per_record": outputs / records, "bytes": len(batches[0][0].value() or b"")}


def profile(size: str, count: int, top: int) -> None:
    state = offline_state()
    p = pipeline(state)
    batches = [consumed(p, size, BATCH, f"prof-{b}") for b in range(max(1, count // BATCH))]
    prof = cProfile.Profile()
    prof.enable()
    for batch in batches:
        route_batch(p, state, batch)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=int(os.environ.get("BENCH_CPU_RECORDS", "5000")))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one pass instead, by own time")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--size", choices=sorted(SIZES), action="append")
    args = parser.parse_args()
    configure_logging("INFO")  # as the router runs: its per-record debug lines cost nothing
    for size in args.size or list(SIZES):
        if args.profile:
            print(f"--- {size}")
            profile(size, args.records, args.top)
            continue
        result = run(size, args.records, args.rounds)
        print(f"{size:10} {result['bytes']:5} bytes  {result['best_us']:7.1f} µs/record best, "
              f"{result['median_us']:7.1f} median  ({result['outputs_per_record']:.0f} outputs/record)")


if __name__ == "__main__":
    main()
