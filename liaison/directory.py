"""Who is on the bus: agencies, groups and agreements, as one immutable snapshot.

Loaded from YAML (`deploy/directory.yaml`, every reference checked) or from the entries of the
compacted `bus.directory` topic, where a deleted entry's references simply match nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import yaml

from liaison.core.files import read_config
from liaison.errors import ConfigError

_ISO_TEXT = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT"
    " BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH"
    " ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT"
    " HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS"
    " LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI"
    " NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG"
    " SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG"
    " UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"
)
ISO_COUNTRIES = frozenset(_ISO_TEXT.split())
"""ISO 3166-1 alpha-2 codes officially assigned (249)."""

ORGANISATIONS = frozenset({"INT", "EU"})
"""Prefixes of international organisations' agency codes (INT-IPSG, EU-EUROPOL)."""

DATA_CATEGORIES = ("PERSONAL", "BIOMETRIC", "DNA", "FINGERPRINT", "FACIAL_IMAGE", "VEHICLE", "DOCUMENT",
                   "FIREARM", "FINANCIAL", "CRIMINAL_RECORD", "LOCATION", "COMMUNICATIONS", "OTHER")
"""The symbols of `liaison.DataCategory` (a unit test keeps them equal to the schema)."""

BIOMETRIC_CATEGORIES = frozenset({"BIOMETRIC", "DNA", "FINGERPRINT", "FACIAL_IMAGE"})
"""Categories that need the recipient's clearance and an agreement."""

AGENCY_CODE = re.compile(r"^([A-Z]{2,3})-([A-Z0-9]+(?:_[A-Z0-9]+)*)$")
GROUP_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:[_-][A-Z0-9]+)*$")

AgencyStatus = Literal["ACTIVE", "SUSPENDED"]
GroupKind = Literal["STANDING", "CASE"]


def check_agency_code(code: object, where: str = "agency") -> str:
    """`code` if it is a valid agency code (CC-NAME), else a ConfigError naming `where`."""
    if not isinstance(code, str):
        raise ConfigError(f"{where}: agency code must be a string, not {code!r}")
    match = AGENCY_CODE.match(code)
    if match is None:
        raise ConfigError(f"{where}: {code!r} is not an agency code (upper case CC-NAME, e.g. FR-PN)")
    prefix = match.group(1)
    if prefix not in ISO_COUNTRIES and prefix not in ORGANISATIONS:
        raise ConfigError(f"{where}: {code!r} starts with {prefix!r}, neither an ISO 3166 alpha-2 country "
                          f"nor an organisation prefix ({', '.join(sorted(ORGANISATIONS))})")
    return code


def country_of(code: str) -> str:
    """The country (or organisation) prefix of an agency code: FR-PN -> FR."""
    return code.split("-", 1)[0]


def _categories(values: Iterable[object], where: str) -> frozenset[str]:
    out: set[str] = set()
    for value in values:
        if value not in DATA_CATEGORIES:
            raise ConfigError(f"{where}: {value!r} is not a data category ({', '.join(DATA_CATEGORIES)})")
        out.add(str(value))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Agency:
    """A police agency or organisation on the bus; its code names its topics and its principal."""

    code: str
    name: str
    country: str = ""  # derived from the code when empty
    groups: frozenset[str] = frozenset()
    hub: bool = False  # the INTERPOL-style general secretariat: reviews notices, sees flags and hits
    status: AgencyStatus = "ACTIVE"
    clearances: frozenset[str] = frozenset()  # data categories it is cleared to receive
    spoc: bool = False  # its country's Single Point of Contact (Directive 2023/977 Art. 14)
    designated: bool = False  # a designated law enforcement authority (Art. 4(1)): copies its SPOC

    def __post_init__(self) -> None:
        where = f"agency {self.code}"
        check_agency_code(self.code, "agency")
        if not self.country:
            object.__setattr__(self, "country", country_of(self.code))
        elif self.country != country_of(self.code):
            raise ConfigError(f"{where}: country {self.country!r} does not match the code's prefix")
        if self.status not in ("ACTIVE", "SUSPENDED"):
            raise ConfigError(f"{where}: status must be ACTIVE or SUSPENDED, not {self.status!r}")
        _categories(self.clearances, f"{where} clearances")
        for group in self.groups:
            if not isinstance(group, str) or not GROUP_NAME.match(group):
                raise ConfigError(f"{where}: {group!r} is not a group name")

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"

    def to_entry(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "country": self.country,
                "groups": sorted(self.groups), "hub": self.hub, "status": self.status,
                "clearances": sorted(self.clearances)} | ({"spoc": True} if self.spoc else {}) \
            | ({"designated": True} if self.designated else {})


OFFICER_CODE = re.compile(r"^([A-Z]{2,3}-[A-Z0-9]+(?:_[A-Z0-9]+)*)-([A-Z0-9]{2,16})$")
"""A liaison officer's code: its agency's code, then its post (FR-PN-BOGOTA)."""

OfficerStatus = Literal["ACTIVE", "REVOKED"]


@dataclass(frozen=True, slots=True)
class Officer:
    """A liaison officer posted abroad by an agency (Council Decision 2003/170/JHA): a delegated
    identity of its own, acting for its agency within cases or partner countries and a period."""

    code: str
    agency: str
    post: str = ""  # where the officer serves, in words (e.g. "Bogota, Colombia")
    cases: frozenset[str] = frozenset()  # case ids delegated
    countries: frozenset[str] = frozenset()  # partner countries (ISO 3166 alpha-2) delegated
    starts_at: int = 0
    ends_at: int = 0
    status: OfficerStatus = "ACTIVE"

    def __post_init__(self) -> None:
        where = f"officer {self.code}"
        match = OFFICER_CODE.match(self.code) if isinstance(self.code, str) else None
        if match is None or match.group(1) != self.agency:
            raise ConfigError(f"{where}: an officer's code is its agency's code then its post, upper case "
                              f"(e.g. FR-PN-BOGOTA for FR-PN), not {self.code!r} for {self.agency!r}")
        check_agency_code(self.agency, where)
        if not self.cases and not self.countries:
            raise ConfigError(f"{where}: a delegation names its cases or its partner countries")
        for country in self.countries:
            if country not in ISO_COUNTRIES:
                raise ConfigError(f"{where}: {country!r} is not an ISO 3166 alpha-2 country")
        if self.ends_at <= self.starts_at:
            raise ConfigError(f"{where}: the delegation must end after it starts")
        if self.status not in ("ACTIVE", "REVOKED"):
            raise ConfigError(f"{where}: status must be ACTIVE or REVOKED, not {self.status!r}")

    def in_force(self, now_ms: int) -> bool:
        return self.status == "ACTIVE" and self.starts_at <= now_ms < self.ends_at

    def covers(self, case_id: str | None, countries: Iterable[str]) -> bool:
        """Whether a message of `case_id` exchanged with agencies of `countries` is delegated: its
        case is, or every one of those countries is a partner country (and there is one)."""
        if case_id is not None and case_id in self.cases:
            return True
        wanted = set(countries)
        return bool(wanted) and wanted <= self.countries

    def to_entry(self) -> dict[str, Any]:
        return {"code": self.code, "agency": self.agency, "post": self.post, "cases": sorted(self.cases),
                "countries": sorted(self.countries), "starts_at": self.starts_at, "ends_at": self.ends_at,
                "status": self.status}


@dataclass(frozen=True, slots=True)
class Group:
    """A standing region (members: agencies listing it) or a case group (explicit members, expiry)."""

    name: str
    kind: GroupKind = "STANDING"
    members: frozenset[str] = frozenset()  # CASE groups only
    expires_at: int | None = None  # ms; CASE groups only: after it, the group reaches nobody
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not GROUP_NAME.match(self.name):
            raise ConfigError(f"group {self.name!r}: not a group name (upper case, e.g. EU, JIT-ORION)")
        where = f"group {self.name}"
        if self.kind not in ("STANDING", "CASE"):
            raise ConfigError(f"{where}: kind must be STANDING or CASE, not {self.kind!r}")
        if self.kind == "STANDING" and (self.members or self.expires_at is not None):
            raise ConfigError(f"{where}: a STANDING group has no members or expiry of its own; its "
                              "members are the agencies that list it under their groups")
        if self.kind == "CASE" and (not self.members or self.expires_at is None):
            raise ConfigError(f"{where}: a CASE group needs its members and expires_at")
        for member in self.members:
            check_agency_code(member, f"{where} members")

    def expired(self, now_ms: int) -> bool:
        return self.expires_at is not None and self.expires_at <= now_ms

    def to_entry(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "members": sorted(self.members),
                "expires_at": self.expires_at, "description": self.description}


@dataclass(frozen=True, slots=True)
class Agreement:
    """A legal instrument letting its parties exchange some data categories (e.g. Prum: DNA)."""

    name: str
    parties: frozenset[str]  # agency codes or ISO 3166 alpha-2 countries
    categories: frozenset[str]
    expires_at: int | None = None
    description: str = ""
    centre: str | None = None  # a party: then only exchanges with it are covered (hub and spoke)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not GROUP_NAME.match(self.name):
            raise ConfigError(f"agreement {self.name!r}: not a name (upper case, e.g. EU-PRUM)")
        where = f"agreement {self.name}"
        if len(self.parties) < 2:
            raise ConfigError(f"{where}: needs at least two parties")
        for party in self.parties:
            if party not in ISO_COUNTRIES:
                check_agency_code(party, f"{where} parties (an agency code or an ISO country)")
        if not self.categories:
            raise ConfigError(f"{where}: covers no data category")
        if self.centre is not None and self.centre not in self.parties:
            raise ConfigError(f"{where}: its centre {self.centre} is not one of its parties")
        _categories(self.categories, f"{where} categories")

    def in_force(self, now_ms: int) -> bool:
        return self.expires_at is None or self.expires_at > now_ms

    def joins(self, a: str, b: str) -> bool:
        """Whether it covers an exchange between parties a and b (with a centre: one must be it)."""
        c = self.centre
        return c is None or c in (a, b, country_of(a), country_of(b))

    def to_entry(self) -> dict[str, Any]:
        return {"name": self.name, "parties": sorted(self.parties), "categories": sorted(self.categories),
                "expires_at": self.expires_at, "description": self.description, "centre": self.centre}


def _officers_by_agency(officers: Iterable[Officer], agencies: Mapping[str, Agency], *,
                        strict: bool) -> dict[str, tuple[Officer, ...]]:
    by_agency: dict[str, list[Officer]] = {}
    for officer in officers:
        if strict and officer.agency not in agencies:
            raise ConfigError(f"officer {officer.code}: its agency {officer.agency} is not in the directory")
        by_agency.setdefault(officer.agency, []).append(officer)
    return {k: tuple(sorted(v, key=lambda o: o.code)) for k, v in by_agency.items()}


def _spocs_by_country(agencies: Iterable[Agency], *, strict: bool) -> dict[str, str]:
    """One Single Point of Contact per country (Directive 2023/977, Art. 14)."""
    spocs: dict[str, str] = {}
    for agency in sorted(agencies, key=lambda a: a.code):
        if agency.spoc:
            if strict and agency.country in spocs:
                raise ConfigError(f"agency {agency.code}: {agency.country} already has a Single Point of "
                                  f"Contact, {spocs[agency.country]}")
            spocs.setdefault(agency.country, agency.code)
    return spocs


class Directory:
    """An immutable snapshot of the directory with the lookups routing needs."""

    __slots__ = ("_by_party", "_officers_of", "_spocs", "_standing", "agencies", "agreements", "groups",
                 "officers")

    def __init__(self, agencies: Iterable[Agency] = (), groups: Iterable[Group] = (),
                 agreements: Iterable[Agreement] = (), officers: Iterable[Officer] = (), *,
                 strict: bool = True) -> None:
        """Check and index the entries; `strict` refuses dangling references instead of ignoring them."""
        by_code: dict[str, Agency] = _unique(agencies, lambda a: a.code, "agency")
        by_group: dict[str, Group] = _unique(groups, lambda g: g.name, "group")
        by_name: dict[str, Agreement] = _unique(agreements, lambda a: a.name, "agreement")
        by_officer: dict[str, Officer] = _unique(officers, lambda o: o.code, "officer")
        officers_of = _officers_by_agency(by_officer.values(), by_code, strict=strict)
        spocs = _spocs_by_country(by_code.values(), strict=strict)
        standing: dict[str, set[str]] = {}
        for agency in by_code.values():
            for name in agency.groups:
                group = by_group.get(name)
                if strict and (group is None or group.kind == "CASE"):
                    raise ConfigError(f"agency {agency.code}: {name} is not a STANDING group in the "
                                      "directory (an agency is listed under a CASE group's members)")
                standing.setdefault(name, set()).add(agency.code)
        by_party: dict[str, set[str]] = {}
        for agreement in by_name.values():
            for party in agreement.parties:
                if strict and party not in ISO_COUNTRIES and party not in by_code:
                    raise ConfigError(f"agreement {agreement.name}: party {party} is not in the directory")
                by_party.setdefault(party, set()).add(agreement.name)
        for group in by_group.values():
            if strict and (missing := sorted(group.members - by_code.keys())):
                raise ConfigError(f"group {group.name}: members {', '.join(missing)} are not agencies")
        self.agencies: Mapping[str, Agency] = MappingProxyType(by_code)  # read-only views
        self.groups: Mapping[str, Group] = MappingProxyType(by_group)
        self.agreements: Mapping[str, Agreement] = MappingProxyType(by_name)
        self._standing = {k: frozenset(v) for k, v in standing.items()}
        self._by_party = {k: frozenset(v) for k, v in by_party.items()}
        self.officers: Mapping[str, Officer] = MappingProxyType(by_officer)
        self._officers_of = officers_of
        self._spocs = spocs

    def __repr__(self) -> str:
        n = len(self.agencies), len(self.groups), len(self.agreements)
        return f"Directory({n[0]} agencies, {n[1]} groups, {n[2]} agreements)"

    def agency(self, code: str) -> Agency | None:
        return self.agencies.get(code)

    def spoc_of(self, country: str) -> str | None:
        """The code of a country's Single Point of Contact, if the directory marks one."""
        return self._spocs.get(country)

    def officers_of(self, agency: str) -> tuple[Officer, ...]:
        """The liaison officers an agency has posted (in force or not), by code."""
        return self._officers_of.get(agency, ())

    def group(self, name: str) -> Group | None:
        return self.groups.get(name)

    def members_of(self, group: str, now_ms: int) -> frozenset[str]:
        """Agencies a group reaches now (any status); nothing for an unknown or expired group."""
        found = self.groups.get(group)
        if found is None or found.expired(now_ms):
            return frozenset()
        if found.kind == "CASE":
            return found.members
        return self._standing.get(group, frozenset())

    def active_agencies(self) -> tuple[str, ...]:
        """Codes of every ACTIVE agency, sorted."""
        return tuple(sorted(code for code, a in self.agencies.items() if a.active))

    def hub_agencies(self) -> tuple[str, ...]:
        """Codes of the agencies flagged as hub, sorted (any status)."""
        return tuple(sorted(code for code, a in self.agencies.items() if a.hub))

    def agreements_between(self, a: str, b: str) -> tuple[Agreement, ...]:
        """Agreements naming both agencies, by code or by country, sorted by name (in force or not)."""
        idx = self._by_party
        empty: frozenset[str] = frozenset()
        left = idx.get(a, empty) | idx.get(country_of(a), empty)
        right = idx.get(b, empty) | idx.get(country_of(b), empty)
        found = (self.agreements[name] for name in sorted(left & right))
        return tuple(ag for ag in found if ag.joins(a, b))

    def agreement_covers(self, a: str, b: str, category: str, now_ms: int) -> bool:
        """True if an agreement in force between `a` and `b` covers `category`."""
        return any(category in ag.categories and ag.in_force(now_ms) for ag in self.agreements_between(a, b))

    # -- the compacted-topic form ---------------------------------------------------------------
    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, JSON-able value) per entry, sorted by key, for the `bus.directory` topic."""
        out = [(f"agency/{k}", v.to_entry()) for k, v in self.agencies.items()]
        out += [(f"group/{k}", v.to_entry()) for k, v in self.groups.items()]
        out += [(f"agreement/{k}", v.to_entry()) for k, v in self.agreements.items()]
        out += [(f"officer/{k}", v.to_entry()) for k, v in self.officers.items()]
        return sorted(out, key=lambda kv: kv[0])

    @classmethod
    def from_entries(cls, entries: Mapping[str, Mapping[str, Any] | None]) -> Directory:
        """Rebuild a snapshot from topic entries; None values (tombstones) are ignored."""
        parsed: dict[str, list[Any]] = {kind: [] for kind in _SECTIONS}
        for key in sorted(entries):
            value = entries[key]
            kind, _, name = key.partition("/")
            if value is None:
                continue
            if kind not in _SECTIONS:
                raise ConfigError(f"entry {key}: unknown kind {kind!r} (agency/, group/, agreement/ or "
                                  "officer/)")
            _, id_key, parse = _SECTIONS[kind]
            item = parse(value, f"entry {key}")
            if getattr(item, id_key) != name:
                raise ConfigError(f"entry {key}: its value names {getattr(item, id_key)!r}, not {name!r}")
            parsed[kind].append(item)
        return cls(parsed["agency"], parsed["group"], parsed["agreement"], parsed["officer"], strict=False)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "directory") -> Directory:
        """Parse and check a directory file's text; errors name `source` and the bad entry."""
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        try:
            return cls(*(_section(raw, kind) for kind in _SECTIONS), strict=True)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Directory:
        return cls.from_yaml(read_config(path, "directory"), source=str(path))


# -- parsing helpers ------------------------------------------------------------------------------
def _section(raw: Any, kind: str) -> list[Any]:
    """The parsed entries of one section of the YAML form."""
    _entry(raw, "top level", set(), {section for section, _, _ in _SECTIONS.values()})
    section, id_key, parse = _SECTIONS[kind]
    items = [] if raw.get(section) is None else raw[section]
    if not isinstance(items, list):
        raise ConfigError(f"{section} must be a list")
    return [parse(e, f"{section}[{i}]" + (f" ({e[id_key]})" if isinstance(e, dict) and id_key in e else ""))
            for i, e in enumerate(items)]


def _unique(items: Iterable[Any], key: Callable[[Any], str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if (k := key(item)) in out:
            raise ConfigError(f"{what} {k} is listed twice")
        out[k] = item
    return out


def _entry(raw: object, where: str, required: set[str], optional: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    if extra := sorted(map(str, set(raw) - required - optional)):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} "
                          f"(allowed: {', '.join(sorted(required | optional))})")
    if missing := sorted(required - raw.keys()):
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    return raw


def _str(raw: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    if (value := raw.get(key)) is None or isinstance(value, str):
        return value or default
    raise ConfigError(f"{where}: {key} must be a string, not {value!r}")


def _strs(raw: Mapping[str, Any], key: str, where: str) -> frozenset[str]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return frozenset(value)


def to_ms(value: object, where: str) -> int | None:
    """Epoch milliseconds from an int, an ISO 8601 string or a YAML date/time (naive means UTC)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an ISO 8601 time or epoch milliseconds") from None
    if not isinstance(value, dt.date):
        raise ConfigError(f"{where}: {value!r} is not a time")
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return int((value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _agency(raw: object, where: str) -> Agency:
    e = _entry(raw, where, {"code", "name"}, {"country", "groups", "hub", "status", "clearances", "spoc",
                                              "designated"})
    for flag in ("hub", "spoc", "designated"):
        if not isinstance(e.get(flag, False), bool):
            raise ConfigError(f"{where}: {flag} must be true or false")
    return Agency(code=check_agency_code(e["code"], where), name=_str(e, "name", where),
                  country=_str(e, "country", where), groups=_strs(e, "groups", where),
                  hub=e.get("hub", False),
                  status=cast(AgencyStatus, _str(e, "status", where, "ACTIVE")),
                  clearances=_strs(e, "clearances", where), spoc=e.get("spoc", False),
                  designated=e.get("designated", False))


def _group(raw: object, where: str) -> Group:
    e = _entry(raw, where, {"name"}, {"kind", "members", "expires_at", "description"})
    return Group(name=_str(e, "name", where), kind=cast(GroupKind, _str(e, "kind", where, "STANDING")),
                 members=_strs(e, "members", where), expires_at=to_ms(e.get("expires_at"), where),
                 description=_str(e, "description", where))


def _agreement(raw: object, where: str) -> Agreement:
    e = _entry(raw, where, {"name", "parties", "categories"}, {"expires_at", "description", "centre"})
    return Agreement(name=_str(e, "name", where), parties=_strs(e, "parties", where),
                     categories=_strs(e, "categories", where), expires_at=to_ms(e.get("expires_at"), where),
                     description=_str(e, "description", where), centre=_str(e, "centre", where) or None)


def _officer(raw: object, where: str) -> Officer:
    e = _entry(raw, where, {"code", "agency", "ends_at"},
               {"post", "cases", "countries", "starts_at", "status"})
    return Officer(code=_str(e, "code", where), agency=_str(e, "agency", where), post=_str(e, "post", where),
                   cases=_strs(e, "cases", where), countries=_strs(e, "countries", where),
                   starts_at=to_ms(e.get("starts_at"), where) or 0, ends_at=to_ms(e["ends_at"], where) or 0,
                   status=cast(OfficerStatus, _str(e, "status", where, "ACTIVE")))


_SECTIONS: dict[str, tuple[str, str, Callable[[object, str], Any]]] = {
    "agency": ("agencies", "code", _agency),
    "group": ("groups", "name", _group),
    "agreement": ("agreements", "name", _agreement),
    "officer": ("officers", "code", _officer),
}
"""Entry kind -> (YAML section, identifying field, parser)."""
