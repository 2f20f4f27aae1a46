"""The codec's compiled writers and readers agree with fastavro on every record of the contract: the
same bytes written, the same records read; what does not fit is refused with EncodeError, and bytes
that are not a record with a DecodeError, whatever they hold. Its uuids are uuid4's."""

from __future__ import annotations

import io
import os
import uuid
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liaison.codec import (
    HEADER,
    EncodeError,
    compile_reader,
    compile_writer,
    parse_wire_schema,
    random_uuid,
)
from liaison.errors import DecodeError
from liaison.schemas import RECORD_TYPES, load_catalog
from tests.avro_strategies import records
from tests.offline_codec import offline_codec

CATALOG = load_catalog()


CODEC = offline_codec()


def _fastavro(name: str, record: dict[str, Any]) -> bytes:
    return HEADER.pack(0, CODEC.schema_id_of(name)) + _fastavro_bytes(CATALOG.standalone(name), record)


def _letter(**changes: Any) -> dict[str, Any]:
    """A DeadLetter with only its required fields (the others have defaults)."""
    return {"dead_letter_id": "d", "failed_at": 1, "service": "s", "source_topic": "t",
            "source_partition": 0, "source_offset": 2, "error_code": "E", "error": "why", **changes}


def _fastavro_read(name: str, data: bytes) -> dict[str, Any] | None:
    """What fastavro reads from `data` (header skipped), None when it cannot or bytes are left."""
    buf = io.BytesIO(data)
    buf.seek(HEADER.size)
    try:
        record = schemaless_reader(buf, parse_wire_schema(CATALOG.standalone(name)), None)
    except Exception:  # noqa: BLE001  # any refusal is a refusal here
        return None
    return record if buf.tell() == len(data) and isinstance(record, dict) else None


def test_every_record_type_has_a_compiled_writer_and_reader() -> None:
    """Else the codec silently falls back to fastavro for that type."""
    header = HEADER.pack(0, 1)
    parsed = {name: parse_wire_schema(CATALOG.standalone(name)) for name in RECORD_TYPES}
    assert [name for name in RECORD_TYPES if compile_writer(parsed[name], header) is None] == []
    assert [name for name in RECORD_TYPES if compile_reader(parsed[name]) is None] == []


@pytest.mark.parametrize("name", RECORD_TYPES)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_same_bytes_as_fastavro(name: str, data: st.DataObject) -> None:
    record = data.draw(records(CATALOG.standalone(name)))
    assert CODEC.encode(name, record) == _fastavro(name, record)
    assert CODEC.decode(CODEC.encode(name, record)) == (name, record)


@pytest.mark.parametrize("name", ["Alert", "Query", "Reply"])
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_damaged_bytes_are_refused_or_read_as_fastavro_reads_them(name: str, data: st.DataObject) -> None:
    """Truncated, overwritten or extended records: a DecodeError, or fastavro's very record (the
    compiled reader may refuse more: enum indexes below 0 and varints over 10 bytes)."""
    wire = bytearray(CODEC.encode(name, data.draw(records(CATALOG.standalone(name)))))
    cut = data.draw(st.integers(HEADER.size, len(wire)))
    for _ in range(data.draw(st.integers(0, 4))):
        wire[data.draw(st.integers(HEADER.size, len(wire) - 1))] = data.draw(st.integers(0, 255))
    damaged = bytes(wire[:cut]) + data.draw(st.binary(max_size=3))
    try:
        read: dict[str, Any] | None = CODEC.decode(damaged)[1]
    except DecodeError:
        read = None
    if read is not None:
        assert read == _fastavro_read(name, damaged)


@pytest.mark.parametrize("value", [-1, 0, 63, 64, -65, 2**31 - 1, -(2**31), 2**62, 2**63 - 1, -(2**63)])
def test_longs_at_the_varint_edges(value: int) -> None:
    record = _letter(failed_at=value, source_offset=value)
    assert CODEC.encode("DeadLetter", record) == _fastavro("DeadLetter", record)


def test_missing_fields_take_their_defaults() -> None:
    """A field left out is written as its schema default (null for a union without one)."""
    record = _letter()
    assert CODEC.decode(CODEC.encode("DeadLetter", record))[1]["headers"] == {}
    assert CODEC.encode("DeadLetter", record) == _fastavro("DeadLetter", record)


@pytest.mark.parametrize(("field", "value"), [
    ("service", None), ("service", b"bytes"), ("service", 5), ("service", "\ud800"),
    ("failed_at", "1"), ("failed_at", 1.5), ("failed_at", 2**63), ("source_partition", 2**31),
    ("headers", {"k": "text"}), ("headers", {1: b"v"}), ("key", "text"), ("error_code", 3),
])
def test_what_does_not_fit_is_refused(field: str, value: Any) -> None:
    record = _letter(**{field: value})
    with pytest.raises(EncodeError):
        CODEC.encode("DeadLetter", record)


def test_a_missing_field_without_default_is_refused() -> None:
    with pytest.raises(EncodeError):
        CODEC.encode("DeadLetter", {"dead_letter_id": "d"})


def test_unknown_enum_symbol_is_refused() -> None:
    with pytest.raises(EncodeError):
        CODEC.encode("Receipt", {"envelope": {}, "kind": "NOT_A_KIND"})


def test_random_uuids_are_version_4_in_canonical_form() -> None:
    """What `str(uuid.uuid4())` gives: canonical text, version 4, RFC 4122 variant, all different."""
    made = [random_uuid() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)
    assert {text[19] for text in made} == set("89ab")  # every variant nibble occurs


def test_names_from_a_schema_never_become_code() -> None:
    """A registered schema may name its types and fields anything fastavro parses: quotes and
    non-ASCII letters are data in the compiled code, and two records differing only there stay apart."""
    odd = {"type": "record", "name": "ns.Ré²cord", "fields": [
        {"name": "a'b\"c", "type": "string"},
        {"name": "inner", "type": {"type": "record", "name": "ns.Ré³cord",
                                   "fields": [{"name": "n", "type": "long"}]}}]}
    parsed = parse_wire_schema(odd)
    writer, reader = compile_writer(parsed, HEADER.pack(0, 9)), compile_reader(parsed)
    assert writer is not None
    assert reader is not None
    record = {"a'b\"c": "hi", "inner": {"n": -3}}
    data = writer(record)
    assert data[HEADER.size:] == _fastavro_bytes(odd, record)
    assert reader(data, HEADER.size) == (record, len(data))


def _fastavro_bytes(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_wire_schema(schema), record)
    return buf.getvalue()


def test_a_forked_child_does_not_repeat_its_parents_uuids() -> None:
    """Random bytes are read ahead in bulk: a child must not reuse those its parent holds."""
    random_uuid()  # the parent now holds bytes for the next ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then leave at once
        os.write(write, random_uuid().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    assert child != random_uuid()
