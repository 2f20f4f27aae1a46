"""Writing records that well-behaved clients refuse to write: a header key that is not UTF-8.

The Kafka protocol carries header keys as bytes; librdkafka's C API and a hand-made request can
put any bytes there, while aiokafka and confluent-kafka's Python API only take text. Here
aiokafka's pure-Python batch builder is used for one producer, with a key object whose UTF-8
form is the raw bytes wanted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiokafka.producer.message_accumulator as accumulator
import aiokafka.producer.producer as producer_module
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy


class RawHeaderKey(str):
    """A header key that encodes to the given bytes, whatever they are."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderKey:
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


@contextlib.contextmanager
def raw_header_keys() -> Iterator[None]:
    """While open, aiokafka producers build batches in Python, so RawHeaderKey reaches the wire."""
    saved: list[tuple[Any, str, Any]] = [(m, "DefaultRecordBatchBuilder", m.DefaultRecordBatchBuilder)
                                         for m in (accumulator, producer_module)]
    for module, name, _ in saved:
        setattr(module, name, _DefaultRecordBatchBuilderPy)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
