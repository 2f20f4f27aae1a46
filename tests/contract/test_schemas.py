"""The Avro schemas are the bus's public API: they parse, round-trip, and document every field."""

from __future__ import annotations

import json
from typing import Any

import avro.schema
import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liaison.schemas import RECORD_TYPES, load_catalog
from tests.avro_strategies import records
from tests.offline_codec import offline_codec

CATALOG = load_catalog()


@pytest.mark.parametrize("name", RECORD_TYPES)
def test_schema_parses_in_both_avro_libraries(name: str) -> None:
    """Each record type is a valid standalone schema for fastavro and for the Apache avro library."""
    standalone = CATALOG.standalone_json(name)
    fastavro.parse_schema(json.loads(standalone))
    assert avro.schema.parse(standalone).fullname == f"liaison.{name}"


def _fields(node: Any) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for fld in node.get("fields", []):
            found.append((f"{node['name']}.{fld['name']}", fld))
        for value in node.values():
            found += _fields(value)
    elif isinstance(node, list):
        for value in node:
            found += _fields(value)
    return found


@pytest.mark.parametrize("name", sorted(CATALOG.definitions))
def test_every_field_is_documented(name: str) -> None:
    """An agency integrator can read what each field means from the schema itself."""
    undocumented = [path for path, fld in _fields(CATALOG.definitions[name]) if not fld.get("doc")]
    assert undocumented == []


@pytest.mark.parametrize("name", sorted(CATALOG.definitions))
def test_optional_fields_default_to_null(name: str) -> None:
    """A union with null lists null first and defaults to it, so fields can be added compatibly."""
    wrong = [path for path, fld in _fields(CATALOG.definitions[name])
             if isinstance(fld["type"], list) and "null" in fld["type"]
             and (fld["type"][0] != "null" or fld.get("default", "absent") is not None)]
    assert wrong == []


CODEC = offline_codec(catalog=CATALOG)


@pytest.mark.parametrize("name", RECORD_TYPES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_record_type_round_trips(name: str, data: st.DataObject) -> None:
    """Any valid record survives encode -> Confluent wire format -> decode unchanged."""
    record = data.draw(records(CATALOG.standalone(name)))
    wire = CODEC.encode(name, record)
    assert wire[0] == 0
    assert int.from_bytes(wire[1:5], "big") == CODEC.schema_id_of(name)
    decoded_name, decoded = CODEC.decode(wire)
    assert decoded_name == name
    assert decoded == record
