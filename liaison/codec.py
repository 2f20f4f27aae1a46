"""Records in the Confluent wire format: magic byte 0, a big-endian 4-byte schema id, Avro binary.

Records are plain Python: uuids are `str`, timestamps are `int` milliseconds since the epoch and
dates `int` days. Logical types do not change the binary encoding, so the codec parses schemas
without them and skips the per-field conversions to `UUID` and `datetime` that would cost more than
the decoding itself.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro import schemaless_reader, schemaless_writer

from liaison.errors import DecodeError, LiaisonError

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size


class EncodeError(LiaisonError, ValueError):
    """A record does not fit its schema; nothing was sent."""


class BadMagicByte(DecodeError):
    code = "BAD_MAGIC_BYTE"


class UnknownSchemaId(DecodeError):
    code = "UNKNOWN_SCHEMA_ID"

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not known to the registry")
        self.schema_id = schema_id


class TruncatedRecord(DecodeError):
    code = "TRUNCATED"


class SchemaMismatch(DecodeError):
    code = "SCHEMA_MISMATCH"




def strip_logical_types(node: Any) -> Any:
    """The same schema without logicalType annotations (identical on the wire)."""
    if isinstance(node, dict):
        return {k: strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical_types(v) for v in node]
    return node


def parse_wire_schema(schema: dict[str, Any] | str) -> Any:
    """fastavro's parsed form of a schema, without logical types."""
    raw = json.loads(schema) if isinstance(schema, str) else schema
    return fastavro.parse_schema(strip_logical_types(raw))


def split_header(data: bytes | None) -> int:
    """The schema id of a wire-format record, or a DecodeError saying what is wrong."""
    if data is None or len(data) == 0:
        raise TruncatedRecord("empty record: no Confluent header")
    if data[0] != MAGIC_BYTE:
        raise BadMagicByte(f"first byte is {data[0]}, not the Confluent magic byte 0")
    if len(data) < HEADER_SIZE:
        raise TruncatedRecord(f"record of {len(data)} bytes is shorter than the 5-byte header")
    return int(HEADER.unpack_from(data)[1])


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """A schema as registered: its id, record name, and parsed forms for reading."""

    schema_id: int
    name: str
    parsed: Any
    reader: Any | None  # our local version of the same type when it differs from the writer's


class Codec:
    """Encodes our record types and decodes any registered schema id, with reader resolution.

    Decoding is synchronous and cache-only; an id seen for the first time raises UnknownSchemaId,
    after which the caller may fetch the schema from the registry (`learn`) and try again.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, WriterSchema] = {}
        self._write: dict[str, tuple[bytes, Any]] = {}  # name -> (header, parsed schema)
        self._local: dict[str, tuple[str, Any]] = {}  # name -> (canonical form, parsed schema)

    # -- what the codec knows -------------------------------------------------------------------
    def use(self, name: str, schema: dict[str, Any] | str, schema_id: int) -> None:
        """Our own version of record type `name`, registered as `schema_id`: used to write and read."""
        parsed = parse_wire_schema(schema)
        self._local[name] = (fastavro.schema.to_parsing_canonical_form(parsed), parsed)
        self._write[name] = (HEADER.pack(MAGIC_BYTE, schema_id), parsed)
        self.learn(schema_id, schema)

    def learn(self, schema_id: int, schema: dict[str, Any] | str) -> WriterSchema:
        """A writer schema fetched from the registry for `schema_id`."""
        raw = json.loads(schema) if isinstance(schema, str) else schema
        parsed = parse_wire_schema(raw)
        name = str(raw.get("name", "")).rsplit(".", 1)[-1] if isinstance(raw, dict) else ""
        reader = None
        if name in self._local:
            canonical, local = self._local[name]
            if fastavro.schema.to_parsing_canonical_form(parsed) != canonical:
                reader = local
        entry = WriterSchema(schema_id, name, parsed, reader)
        self._by_id[schema_id] = entry
        return entry

    def knows(self, schema_id: int) -> bool:
        return schema_id in self._by_id

    def schema_id_of(self, name: str) -> int:
        header, _ = self._write[name]
        return int(HEADER.unpack(header)[1])

    # -- the hot path ---------------------------------------------------------------------------
    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        try:
            header, parsed = self._write[name]
        except KeyError:
            raise EncodeError(f"no schema registered for record type {name}") from None
        buf = io.BytesIO()
        buf.write(header)
        try:
            schemaless_writer(buf, parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"{name} record does not fit its schema: {exc}") from None
        return buf.getvalue()

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """(record type name, record); read with our local schema when the writer used another."""
        schema_id = split_header(data)
        assert data is not None  # split_header refused None
        entry = self._by_id.get(schema_id)
        if entry is None:
            raise UnknownSchemaId(schema_id)
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buf, entry.parsed, entry.reader)
        except (EOFError, StopIteration, struct.error) as exc:
            raise TruncatedRecord(f"record ends early for schema {schema_id} ({entry.name}): "
                                  f"{exc or 'end of data'}") from None
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError,
                fastavro.read.SchemaResolutionError) as exc:
            raise SchemaMismatch(f"bytes do not match schema {schema_id} ({entry.name}): {exc}") from None
        if buf.tell() != len(data):
            raise SchemaMismatch(f"{len(data) - buf.tell()} bytes left over after reading schema "
                                 f"{schema_id} ({entry.name})")
        if not isinstance(record, dict):
            raise SchemaMismatch(f"schema {schema_id} is not a record schema")
        return entry.name, record
