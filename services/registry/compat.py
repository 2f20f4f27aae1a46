"""Avro schemas as the registry sees them: parsed once, identified by a canonical form, and checked for
compatibility with the Avro library's own reader/writer checker, never by hand.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import avro.errors
import avro.schema
import fastavro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from liaison.errors import SchemaError

# What the two parsers raise on documents that are JSON but not Avro (fastavro leaks a few builtins).
_PARSE_ERRORS = (
    avro.errors.AvroException, fastavro.schema.SchemaParseException,
    ValueError, TypeError, KeyError, AttributeError, RecursionError,
)


class CompatibilityLevel(StrEnum):
    """Confluent's compatibility levels: *_TRANSITIVE check every live version, the others the latest."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """The new schema must read data written with the old ones."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """The old schemas must read data written with the new one."""
        return self.value.startswith(("FORWARD", "FULL"))

    @classmethod
    def parse(cls, value: object) -> CompatibilityLevel:
        """A level from a request body, in any letter case; ValueError names the allowed values."""
        if isinstance(value, str):
            try:
                return cls(value.strip().upper())
            except ValueError:
                pass
        allowed = ", ".join(level.value for level in cls)
        raise ValueError(f"invalid compatibility level {value!r}; valid values are {allowed}")


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """One parsed Avro schema.

    `text` is what the registry stores and serves (the submitted document without its whitespace);
    `canonical` is its identity: the Avro library's normalised JSON with sorted keys, so that
    whitespace, key order and how names are qualified do not make a new schema id.
    """

    text: str
    canonical: str
    parsed: avro.schema.Schema


def parse_schema(text: str) -> AvroSchema:
    """Parse a schema the way both the registry (avro) and the Confluent serdes (fastavro) will.

    Raises:
        SchemaError: the text is not JSON, not Avro, or has a default that does not match its type.
    """
    if not text.strip():
        raise SchemaError("empty schema")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"schema is not JSON: {exc}") from None
    try:
        # fastavro checks defaults against their types, which avro's parser does not.
        fastavro.schema.parse_schema(document)
        with warnings.catch_warnings():
            # Unknown or malformed logical types are ignored, as the Avro specification says.
            warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)
            parsed = avro.schema.parse(text)
    except _PARSE_ERRORS as exc:
        raise SchemaError(f"invalid Avro schema: {exc}") from None
    return AvroSchema(
        text=json.dumps(document, separators=(",", ":"), ensure_ascii=False),
        canonical=json.dumps(parsed.to_json(), sort_keys=True, separators=(",", ":")),
        parsed=parsed,
    )


@dataclass(frozen=True)
class CompatibilityResult:
    """Whether a candidate may join a subject, and why not (one message per failed reader/writer pair)."""

    compatible: bool
    messages: tuple[str, ...] = ()


def reader_problems(reader: AvroSchema, writer: AvroSchema) -> list[str]:
    """What stops `reader` from reading data written with `writer`; empty when it can."""
    # A fresh checker each time: it memoises by object identity.
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro is untyped
    result = checker.get_compatibility(reader.parsed, writer.parsed)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted({kind.value for kind in result.incompatibilities}))
    where = ", ".join(sorted(result.locations))
    what = "; ".join(sorted(result.messages))
    return [f"{kinds} at {where}: {what}"]


def check_compatibility(
    level: CompatibilityLevel, candidate: AvroSchema, existing: Mapping[int, AvroSchema],
) -> CompatibilityResult:
    """Check `candidate` against a subject's live versions (version -> schema) under `level`."""
    if level is CompatibilityLevel.NONE or not existing:
        return CompatibilityResult(compatible=True)
    versions = sorted(existing)
    targets = versions if level.transitive else versions[-1:]
    messages: list[str] = []
    for version in targets:
        old = existing[version]
        if level.backward:
            messages += [f"new schema cannot read data written with version {version} ({level}): {problem}"
                         for problem in reader_problems(reader=candidate, writer=old)]
        if level.forward:
            messages += [f"version {version} cannot read data written with the new schema ({level}): "
                         f"{problem}" for problem in reader_problems(reader=old, writer=candidate)]
    return CompatibilityResult(compatible=not messages, messages=tuple(messages))
