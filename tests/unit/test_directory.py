"""The directory: validation, lookups, the YAML form, the compacted-topic form."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from liaison.directory import (
    DATA_CATEGORIES,
    ISO_COUNTRIES,
    Agency,
    Agreement,
    Directory,
    Group,
    check_agency_code,
    to_ms,
)
from liaison.errors import ConfigError
from liaison.schemas import default_schema_dir
from tests.unit.policy_fixtures import FAR, NOW, small_directory

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "directory.yaml"

MINIMAL = """
agencies:
  - {code: FR-PN, name: Police nationale, groups: [EU], clearances: [DNA]}
  - {code: DE-BKA, name: Bundeskriminalamt, groups: [EU]}
groups:
  - {name: EU, kind: STANDING}
agreements:
  - {name: PRUM, parties: [FR, DE], categories: [DNA]}
"""


def test_data_categories_match_the_schema() -> None:
    """DATA_CATEGORIES is the symbol list of liaison.DataCategory."""
    schema = json.loads((default_schema_dir() / "liaison.DataCategory.avsc").read_text())
    assert tuple(schema["symbols"]) == DATA_CATEGORIES


def test_iso_list_has_every_assigned_code() -> None:
    """The ISO 3166-1 alpha-2 list holds the 249 assigned codes."""
    assert len(ISO_COUNTRIES) == 249
    assert {"FR", "DE", "US", "SG", "BR", "JP"} <= ISO_COUNTRIES


@pytest.mark.parametrize("code", ["FR-PN", "DE-BKA", "INT-IPSG", "EU-EUROPOL", "US-FBI", "GB-NCA_CT"])
def test_valid_agency_codes(code: str) -> None:
    """Country or organisation prefix, a hyphen, an upper-case agency name."""
    assert check_agency_code(code) == code


@pytest.mark.parametrize("code", ["fr-pn", "FR", "FRPN", "XX-PN", "FRA-PN", "FR-", "FR-P-N", "ABC-X", 42])
def test_invalid_agency_codes(code: object) -> None:
    """Lower case, unknown countries, missing parts and non-strings are refused."""
    with pytest.raises(ConfigError):
        check_agency_code(code)


def test_agency_derives_its_country() -> None:
    """An agency's country is its code's prefix."""
    assert Agency("FR-PN", "Police nationale").country == "FR"
    assert Agency("INT-IPSG", "General Secretariat").country == "INT"


def test_agency_country_must_match_the_code() -> None:
    """A country that contradicts the code is an error."""
    with pytest.raises(ConfigError, match="does not match"):
        Agency("FR-PN", "Police nationale", country="DE")


def test_agency_status_and_clearances_are_checked() -> None:
    """Unknown statuses and data categories are refused."""
    with pytest.raises(ConfigError, match="status"):
        Agency("FR-PN", "x", status="ON")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a data category"):
        Agency("FR-PN", "x", clearances=frozenset({"DNA", "TELEPATHY"}))


def test_group_rules() -> None:
    """A CASE group needs members and an expiry; a STANDING group has neither."""
    with pytest.raises(ConfigError, match="CASE group needs"):
        Group("JIT-X", "CASE", members=frozenset({"FR-PN"}))
    with pytest.raises(ConfigError, match="STANDING group has no members"):
        Group("EU", "STANDING", members=frozenset({"FR-PN"}))
    with pytest.raises(ConfigError, match="kind"):
        Group("EU", "REGION")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a group name"):
        Group("eu")


def test_agreement_rules() -> None:
    """An agreement needs two valid parties, a category, and a centre among its parties."""
    with pytest.raises(ConfigError, match="two parties"):
        Agreement("A", frozenset({"FR"}), frozenset({"DNA"}))
    with pytest.raises(ConfigError, match="no data category"):
        Agreement("A", frozenset({"FR", "DE"}), frozenset())
    with pytest.raises(ConfigError, match="centre"):
        Agreement("A", frozenset({"FR", "DE"}), frozenset({"DNA"}), centre="US")
    with pytest.raises(ConfigError):
        Agreement("A", frozenset({"FR", "XX"}), frozenset({"DNA"}))


def test_members_of_standing_case_and_expired_groups() -> None:
    """Standing groups gather their agencies; case groups list theirs; expired or unknown reach nobody."""
    d = small_directory()
    assert d.members_of("EU", NOW) == {"FR-PN", "FR-GN", "DE-BKA", "IT-PS"}
    assert d.members_of("JIT-A", NOW) == {"FR-PN", "DE-BKA", "US-FBI"}
    assert d.members_of("JIT-A", FAR) == frozenset()
    assert d.members_of("JIT-OLD", NOW) == frozenset()
    assert d.members_of("NOPE", NOW) == frozenset()


def test_active_and_hub_agencies() -> None:
    """Suspended agencies are not active; hubs come from the flag."""
    d = small_directory()
    assert "IT-PS" not in d.active_agencies()
    assert d.active_agencies() == tuple(sorted(d.active_agencies()))
    assert d.hub_agencies() == ("INT-IPSG",)
    assert d.agency("FR-PN") is not None
    assert d.agency("XX-NO") is None


def test_agreement_covers_by_country_agency_category_and_time() -> None:
    """Agreements match by agency code or country, per category, while in force."""
    d = small_directory()
    assert d.agreement_covers("FR-PN", "DE-BKA", "DNA", NOW)
    assert d.agreement_covers("FR-GN", "DE-BKA", "DNA", NOW)  # by country
    assert d.agreement_covers("FR-PN", "US-FBI", "FINGERPRINT", NOW)  # by agency
    assert not d.agreement_covers("FR-GN", "US-FBI", "FINGERPRINT", NOW)  # FR-US names FR-PN only
    assert not d.agreement_covers("FR-PN", "US-FBI", "DNA", NOW)  # category not covered
    assert not d.agreement_covers("FR-PN", "BR-PF", "DNA", NOW)  # expired
    assert d.agreement_covers("FR-PN", "DE-BKA", "DNA", FAR + 1)  # no expiry


def test_centred_agreement_covers_only_exchanges_with_its_centre() -> None:
    """A hub-and-spoke agreement covers the hub with each party, not the parties with each other."""
    d = small_directory()
    assert d.agreement_covers("FR-PN", "INT-IPSG", "DNA", NOW)
    assert d.agreement_covers("INT-IPSG", "US-FBI", "DNA", NOW)
    assert not d.agreement_covers("US-FBI", "DE-BKA", "DNA", NOW)


def test_yaml_minimal() -> None:
    """A small YAML directory loads with its lookups."""
    d = Directory.from_yaml(MINIMAL)
    assert set(d.agencies) == {"FR-PN", "DE-BKA"}
    assert d.members_of("EU", NOW) == {"FR-PN", "DE-BKA"}
    assert d.agency("FR-PN") == Agency("FR-PN", "Police nationale", groups=frozenset({"EU"}),
                                       clearances=frozenset({"DNA"}))


def test_empty_yaml_is_an_empty_directory() -> None:
    """An empty file is a directory with nobody in it."""
    assert Directory.from_yaml("").agencies == {}


@pytest.mark.parametrize(("text", "message"), [
    ("agencies: [", "not valid YAML"),
    ("- a\n- b", "must be a mapping"),
    ("agencies: {}", "agencies must be a list"),
    ("agents: []", "unknown key"),
    ("agencies:\n  - {code: FR-PN}", r"agencies\[0\] \(FR-PN\): missing name"),
    ("agencies:\n  - {code: fr-pn, name: x}", "not an agency code"),
    ("agencies:\n  - {code: FR-PN, name: x, clearence: [DNA]}", "unknown key.*clearence"),
    ("agencies:\n  - {code: FR-PN, name: x, hub: yes-please}", "hub must be true or false"),
    ("agencies:\n  - {code: FR-PN, name: x, groups: EU}", "groups must be a list"),
    ("agencies:\n  - {code: FR-PN, name: x, groups: [EU]}", "EU is not a STANDING group"),
    ("agencies:\n  - {code: FR-PN, name: x}\n  - {code: FR-PN, name: y}", "FR-PN is listed twice"),
    ("groups:\n  - {name: JIT, kind: CASE, members: [FR-PN], expires_at: 2030-01-01}", "not agencies"),
    ("groups:\n  - {name: JIT, kind: CASE, members: [FR-PN], expires_at: soon}", "not an ISO 8601"),
    ("agreements:\n  - {name: A, parties: [FR, DE-BKA], categories: [DNA]}", "party DE-BKA"),
    ("agreements:\n  - {name: A, parties: [FR, DE], categories: [DNAA]}", "not a data category"),
])
def test_yaml_errors_name_the_bad_entry(text: str, message: str) -> None:
    """Every mistake is a ConfigError naming the file and the entry."""
    with pytest.raises(ConfigError, match=message) as info:
        Directory.from_yaml(text, source="dir.yaml")
    assert str(info.value).startswith("dir.yaml: ")


def test_case_group_agency_listing_is_refused() -> None:
    """An agency cannot list a CASE group among its standing groups."""
    text = textwrap.dedent("""
        agencies:
          - {code: FR-PN, name: x, groups: [JIT]}
        groups:
          - {name: JIT, kind: CASE, members: [FR-PN], expires_at: 2030-01-01T00:00:00Z}
    """)
    with pytest.raises(ConfigError, match="JIT is not a STANDING group"):
        Directory.from_yaml(text)


def test_times_in_every_form() -> None:
    """Expiry times are epoch ms, ISO strings or YAML dates, naive meaning UTC."""
    assert to_ms(1_000, "x") == 1_000
    assert to_ms("1970-01-01T00:00:01Z", "x") == 1_000
    assert to_ms("1970-01-01T00:00:01", "x") == 1_000
    assert to_ms(None, "x") is None
    text = "groups:\n  - {name: J, kind: CASE, members: [FR-PN], expires_at: 1970-01-02}\n" \
           "agencies:\n  - {code: FR-PN, name: x}"
    group = Directory.from_yaml(text).group("J")
    assert group is not None
    assert group.expires_at == 86_400_000
    with pytest.raises(ConfigError):
        to_ms(True, "x")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A directory file that cannot be read says which one."""
    with pytest.raises(ConfigError, match="cannot read directory file"):
        Directory.from_file(tmp_path / "nope.yaml")


def test_entries_round_trip() -> None:
    """entries() -> JSON -> from_entries() gives the same directory."""
    d = small_directory()
    entries = d.entries()
    assert [k for k, _ in entries] == sorted(k for k, _ in entries)
    assert {k.split("/")[0] for k, _ in entries} == {"agency", "group", "agreement"}
    as_json = {k: json.loads(json.dumps(v)) for k, v in entries}
    again = Directory.from_entries(as_json)
    assert again.entries() == entries
    assert again.members_of("EU", NOW) == d.members_of("EU", NOW)


def test_tombstones_and_dangling_references() -> None:
    """A tombstoned entry is absent; references to it match nothing instead of failing."""
    entries: dict[str, dict[str, object] | None] = dict(small_directory().entries())
    entries["group/EU"] = None
    entries["agency/US-FBI"] = None
    entries["agreement/PRUM"] = None
    d = Directory.from_entries(entries)
    assert d.group("EU") is None
    assert d.members_of("EU", NOW) == frozenset()
    assert d.agency("US-FBI") is None
    assert "US-FBI" in d.members_of("JIT-A", NOW)  # the case group still lists it; routing denies it
    assert not d.agreement_covers("FR-PN", "DE-BKA", "DNA", NOW)


def test_bad_entries_are_refused() -> None:
    """An entry under the wrong key, of an unknown kind or malformed is a ConfigError naming the key."""
    good = dict(small_directory().entries())
    with pytest.raises(ConfigError, match="entry agency/DE-BKA"):
        Directory.from_entries({"agency/DE-BKA": good["agency/FR-PN"]})
    with pytest.raises(ConfigError, match="unknown kind"):
        Directory.from_entries({"policy/X": {"a": 1}})
    with pytest.raises(ConfigError, match="entry agency/FR-PN"):
        Directory.from_entries({"agency/FR-PN": {"code": "FR-PN"}})


def test_empty_entries() -> None:
    """No entries is an empty directory (a fresh bus)."""
    assert len(Directory.from_entries({}).agencies) == 0


def test_deploy_directory_loads_and_is_realistic() -> None:
    """deploy/directory.yaml loads and has what the demo needs."""
    d = Directory.from_file(DEPLOY)
    countries = {a.country for a in d.agencies.values()} - {"INT", "EU"}
    assert len(countries) >= 8
    assert d.hub_agencies() == ("INT-IPSG",)
    assert "EU-EUROPOL" in d.agencies
    assert {"EU", "SCHENGEN", "ASEANAPOL", "AMERIPOL"} <= set(d.groups)
    case = [g for g in d.groups.values() if g.kind == "CASE"]
    assert len(case) == 1
    assert len(case[0].members) == 3
    assert any(not a.clearances for a in d.agencies.values())
    assert d.agreement_covers("FR-PN", "DE-BKA", "DNA", NOW)
    assert not d.agreement_covers("FR-PN", "SG-SPF", "FINGERPRINT", NOW)
