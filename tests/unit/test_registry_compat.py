"""The registry's Avro rules: schema identity, and each compatibility level in both directions (no broker)."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest

from liaison.errors import SchemaError
from services.registry.compat import (
    AvroSchema,
    CompatibilityLevel,
    check_compatibility,
    parse_schema,
    reader_problems,
)

L = CompatibilityLevel


def record(*fields: dict[str, Any], name: str = "Person", **extra: Any) -> AvroSchema:
    """A record schema with an `id` field plus `fields`."""
    document = {"type": "record", "name": name, "namespace": "liaison.test",
                "fields": [{"name": "id", "type": "string"}, *fields], **extra}
    return parse_schema(json.dumps(document))


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


BASE = record()
WITH_NAME = record(field("name", "string"))
WITH_NAME_DEFAULT = record(field("name", "string", default=""))
AGE_INT = record(field("age", "int"))
AGE_LONG = record(field("age", "long"))
AGE_STRING = record(field("age", "string"))
COLOUR_2 = record(field("colour", {"type": "enum", "name": "Colour", "symbols": ["RED", "BLUE"]}))
COLOUR_3 = record(field("colour", {"type": "enum", "name": "Colour", "symbols": ["RED", "BLUE", "GREEN"]}))

class Change(NamedTuple):
    """One schema evolution and whether each direction of reading survives it."""

    name: str
    old: AvroSchema
    new: AvroSchema
    backward: bool  # the new schema reads data written with the old one
    forward: bool  # the old schema reads data written with the new one


CHANGES = [
    Change("add a field without default", BASE, WITH_NAME, backward=False, forward=True),
    Change("add a field with a default", BASE, WITH_NAME_DEFAULT, backward=True, forward=True),
    Change("remove a field without default", WITH_NAME, BASE, backward=True, forward=False),
    Change("remove a field with a default", WITH_NAME_DEFAULT, BASE, backward=True, forward=True),
    Change("widen int to long", AGE_INT, AGE_LONG, backward=True, forward=False),
    Change("narrow long to int", AGE_LONG, AGE_INT, backward=False, forward=True),
    Change("change int to string", AGE_INT, AGE_STRING, backward=False, forward=False),
    Change("add an enum symbol", COLOUR_2, COLOUR_3, backward=True, forward=False),
    Change("remove an enum symbol", COLOUR_3, COLOUR_2, backward=False, forward=True),
    Change("rename the record", BASE, record(name="Human"), backward=False, forward=False),
]


@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
@pytest.mark.parametrize("level", list(CompatibilityLevel), ids=str)
def test_each_level_judges_each_change(level: CompatibilityLevel, change: Change) -> None:
    """BACKWARD: new reads old; FORWARD: old reads new; FULL: both; NONE: anything (one old version)."""
    expected = {
        "BACKWARD": change.backward, "FORWARD": change.forward,
        "FULL": change.backward and change.forward, "NONE": True,
    }[level.value.removesuffix("_TRANSITIVE")]
    result = check_compatibility(level, change.new, {1: change.old})
    assert result.compatible is expected, result.messages
    assert bool(result.messages) is not expected


def test_backward_reports_the_missing_default_and_the_version() -> None:
    """A refused change says which version, which direction and which field is the problem."""
    result = check_compatibility(L.BACKWARD, WITH_NAME, {4: BASE})
    assert not result.compatible
    [message] = result.messages
    assert "version 4" in message
    assert "BACKWARD" in message
    assert "reader_field_missing_default_value" in message
    assert "name" in message


def test_full_reports_both_directions() -> None:
    """Under FULL a change broken both ways yields one message per direction."""
    result = check_compatibility(L.FULL, AGE_STRING, {1: AGE_INT})
    assert len(result.messages) == 2
    assert any(m.startswith("new schema cannot read") for m in result.messages)
    assert any(m.startswith("version 1 cannot read") for m in result.messages)


def test_reader_problems_is_directional() -> None:
    """A long reader reads int data; an int reader cannot read long data."""
    assert reader_problems(reader=AGE_LONG, writer=AGE_INT) == []
    assert reader_problems(reader=AGE_INT, writer=AGE_LONG) != []


# A history where the newest step is fine but an older version is not.
V1 = record(field("alias", "int"))
V2 = record()  # drops alias
V3 = record(field("alias", "string", default=""))  # brings it back as a string


def test_backward_checks_only_the_latest_but_transitive_checks_all() -> None:
    """BACKWARD compares with the latest version only; BACKWARD_TRANSITIVE with every one."""
    history = {1: V1, 2: V2}
    assert check_compatibility(L.BACKWARD, V3, history).compatible
    result = check_compatibility(L.BACKWARD_TRANSITIVE, V3, history)
    assert not result.compatible
    assert all("version 1" in m for m in result.messages)


def test_forward_checks_only_the_latest_but_transitive_checks_all() -> None:
    """FORWARD_TRANSITIVE refuses a new schema that an old reader without a default cannot read."""
    history = {1: WITH_NAME, 2: WITH_NAME_DEFAULT}
    assert check_compatibility(L.FORWARD, BASE, history).compatible
    result = check_compatibility(L.FORWARD_TRANSITIVE, BASE, history)
    assert not result.compatible
    assert all("version 1" in m for m in result.messages)


def test_full_transitive_checks_all_versions() -> None:
    """FULL passes on the latest version alone while FULL_TRANSITIVE finds the older conflict."""
    history = {1: AGE_INT, 2: BASE}
    candidate = record(field("age", "string", default=""))
    assert check_compatibility(L.FULL, candidate, history).compatible
    assert not check_compatibility(L.FULL_TRANSITIVE, candidate, history).compatible


def test_first_version_is_always_compatible() -> None:
    """A subject without versions accepts anything, whatever its level."""
    for level in CompatibilityLevel:
        assert check_compatibility(level, AGE_STRING, {}).compatible


def test_identity_ignores_whitespace_key_order_and_name_qualification() -> None:
    """Equivalent spellings of one schema share a canonical form, so they get one id."""
    compact = parse_schema(
        '{"type":"record","name":"A","namespace":"n","fields":[{"name":"x","type":"int"}]}')
    spaced = parse_schema(' {\n "fields": [ {"type": "int", "name": "x"} ],\n "name": "A", "namespace": "n",'
                          ' "type": "record" }\n')
    qualified = parse_schema('{"type":"record","name":"n.A","fields":[{"name":"x","type":"int"}]}')
    assert compact.canonical == spaced.canonical == qualified.canonical
    assert spaced.text == json.dumps(json.loads(spaced.text), separators=(",", ":"))
    assert "\n" not in spaced.text


def test_identity_keeps_meaningful_differences() -> None:
    """A default, a doc or a field order change is a different schema."""
    plain = record(field("name", "string"))
    assert plain.canonical != record(field("name", "string", default="")).canonical
    assert plain.canonical != record(field("name", "string", doc="Full name")).canonical
    assert record(field("a", "int"), field("b", "int")).canonical != \
        record(field("b", "int"), field("a", "int")).canonical


@pytest.mark.parametrize("text", [
    "",
    "not json",
    '{"type": "nope"}',
    '{"type": "record", "name": "A"}',
    '{"type": "record", "name": "A", "fields": [{"name": "a", "type": "int", "default": "x"}]}',
    '{"type": "record", "name": "1A", "fields": [{"name": "a", "type": "int"}]}',
    '{"type": "fixed", "name": "F", "size": "big"}',
    '{"type": "array"}',
])
def test_invalid_schemas_are_refused(text: str) -> None:
    """Malformed JSON, unknown types, missing parts, bad names and mistyped defaults are SchemaErrors."""
    with pytest.raises(SchemaError):
        parse_schema(text)


def test_unknown_logical_types_are_ignored_as_the_spec_says() -> None:
    """An unknown logicalType leaves the underlying type, without a warning escaping."""
    schema = parse_schema('{"type": "string", "logicalType": "liaison-case-id"}')
    assert schema.parsed.type == "string"


def test_levels_parse_in_any_case_and_refuse_others() -> None:
    """Levels come from request bodies; lower case is accepted, anything else names the valid values."""
    assert CompatibilityLevel.parse("full_transitive") is L.FULL_TRANSITIVE
    assert (L.FULL_TRANSITIVE.transitive, L.FULL_TRANSITIVE.backward, L.FULL_TRANSITIVE.forward) == (
        True, True, True)
    assert (L.BACKWARD.transitive, L.BACKWARD.backward, L.BACKWARD.forward) == (False, True, False)
    assert (L.NONE.backward, L.NONE.forward) == (False, False)
    for bad in ("SIDEWAYS", None, 3, ""):
        with pytest.raises(ValueError, match="BACKWARD_TRANSITIVE"):
            CompatibilityLevel.parse(bad)
