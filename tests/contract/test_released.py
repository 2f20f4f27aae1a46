"""Today's schemas stay compatible with every released version, at the subjects' level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liaison.schemas import COMPATIBILITY, RECORD_TYPES, load_catalog, subject_for
from services.registry.compat import CompatibilityLevel, check_compatibility, parse_schema

RELEASED = Path(__file__).parent / "released"
CATALOG = load_catalog()


def _released(subject: str) -> dict[int, str]:
    return {int(p.stem.removeprefix("v")): p.read_text() for p in (RELEASED / subject).glob("v*.avsc")}


@pytest.mark.parametrize("name", RECORD_TYPES)
def test_current_schema_is_compatible_with_every_released_version(name: str) -> None:
    """Old and new agency systems keep understanding each other (FULL_TRANSITIVE)."""
    released = _released(subject_for(name))
    assert released, f"no released version of {subject_for(name)} in {RELEASED}"
    result = check_compatibility(
        CompatibilityLevel.parse(COMPATIBILITY), parse_schema(CATALOG.standalone_json(name)),
        {version: parse_schema(text) for version, text in released.items()},
    )
    assert result.compatible, result.messages


def test_removing_a_field_without_default_breaks_the_contract() -> None:
    """The check above can fail: dropping a required envelope field is refused."""
    schema = json.loads(CATALOG.standalone_json("Query"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "question"]
    schema["fields"].append({"name": "extra", "type": "string"})
    result = check_compatibility(
        CompatibilityLevel.FULL_TRANSITIVE, parse_schema(json.dumps(schema)),
        {v: parse_schema(t) for v, t in _released("liaison.Query").items()},
    )
    assert not result.compatible
