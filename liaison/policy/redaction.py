"""Field-level redaction: where protected data sits in a record, and removing it from a copy.

Biometric data may sit in three places, the same in Alert, Query and Reply where the field exists:

- `subject.biometrics`, field by field (`FIELD_CATEGORY`);
- `subject.identifiers`, an entry whose `scheme` names a biometric kind (AFIS, DNA, FACIAL_IMAGE…);
- `criteria` (queries), an entry whose key names one (`dna_profile_ref`, `latentPrint`…).

A name is biometric when one of its words (split at anything but letters and digits, and at
camelCase) is a word of `BIOMETRIC_WORDS` (or that word plus S) or begins with a stem of
`BIOMETRIC_STEMS`; this is the one vocabulary of the bus. Values are never read: they are the
data, free text and names (Iris, Palm) that a vocabulary would misread.

A redaction path is a dotted field path (`subject.biometrics.dna_profile`: the field is emptied) or
a container path with a category (`criteria[DNA]`, `subject.identifiers[FINGERPRINT]`: the entries
of that category are removed; `[BIOMETRIC]` removes every biometric entry).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

BIOMETRICS = "subject.biometrics"
IDENTIFIERS = "subject.identifiers"
CRITERIA = "criteria"
GENERIC = "BIOMETRIC"  # the category that stands for all of them

CATEGORY_PATHS: dict[str, tuple[str, ...]] = {
    "BIOMETRIC": (BIOMETRICS,),
    "DNA": (f"{BIOMETRICS}.dna_profile",),
    "FINGERPRINT": (f"{BIOMETRICS}.fingerprint_ref", f"{BIOMETRICS}.fingerprints"),
    "FACIAL_IMAGE": (f"{BIOMETRICS}.facial_image",),
}
"""Protected data category -> the fields of `subject.biometrics` that hold it."""

FIELD_CATEGORY: dict[str, str] = {"dna_profile": "DNA", "fingerprint_ref": "FINGERPRINT",
                                  "fingerprints": "FINGERPRINT", "facial_image": "FACIAL_IMAGE"}
"""Field of `liaison.Biometrics` -> the category its value belongs to."""

BIOMETRIC_WORDS: dict[str, str] = {
    "DNA": "DNA", "CODIS": "DNA",
    "FINGER": "FINGERPRINT", "PALM": "FINGERPRINT", "LATENT": "FINGERPRINT", "AFIS": "FINGERPRINT",
    "FACE": "FACIAL_IMAGE",
    "IRIS": GENERIC, "RETINA": GENERIC, "GAIT": GENERIC, "ABIS": GENERIC, "BIOMETRIC": GENERIC,
}
"""Words (whole, or plus S) that make an identifier scheme or a criteria key biometric."""

BIOMETRIC_STEMS: dict[str, str] = {
    "DNA": "DNA", "CODIS": "DNA",
    "FINGERPRINT": "FINGERPRINT", "TENPRINT": "FINGERPRINT", "PALMPRINT": "FINGERPRINT",
    "DACTYLO": "FINGERPRINT", "AFIS": "FINGERPRINT", "EURODAC": "FINGERPRINT",
    "FACIAL": "FACIAL_IMAGE", "FACEIMAGE": "FACIAL_IMAGE", "MUGSHOT": "FACIAL_IMAGE",
    "BIOMETRIC": GENERIC, "VOICEPRINT": GENERIC, "IRISCODE": GENERIC,
}
"""Stems: a word that begins with one is biometric (FINGERPRINTREF, DNAPROFILE, FACIALIMAGE)."""

SELECTED = (IDENTIFIERS, CRITERIA)
"""Places whose entries are chosen by name."""

_ALL_FIELDS = frozenset(p for c in ("DNA", "FINGERPRINT", "FACIAL_IMAGE") for p in CATEGORY_PATHS[c])
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[A-Z0-9]+")
_CACHED_NAME = 64  # longer names are classified without caching: a sender cannot fill the cache
_NONE: frozenset[str] = frozenset()
Found = frozenset[tuple[str, str]]


def biometric_categories(name: object) -> frozenset[str]:
    """The biometric categories an identifier scheme or a criteria key names (empty: none)."""
    if not isinstance(name, str) or not name:
        return _NONE
    if len(name) <= _CACHED_NAME:
        return _categories_of(name)
    return _categories_of.__wrapped__(name)


@lru_cache(maxsize=4096)
def _categories_of(name: str) -> frozenset[str]:
    found: set[str] = set()
    for word in _WORD.findall(_CAMEL.sub(r"\1_\2", name).upper()):
        cat = BIOMETRIC_WORDS.get(word) or BIOMETRIC_WORDS.get(word[:-1] if word.endswith("S") else "")
        if cat is None:
            cat = next((c for stem, c in BIOMETRIC_STEMS.items() if word.startswith(stem)), None)
        if cat is not None:
            found.add(cat)
    return frozenset(found) if found else _NONE


def locate(record: Mapping[str, Any]) -> Found:
    """(place, category) for every piece of biometric data the record holds, declared or not."""
    found: set[tuple[str, str]] = set()
    subject = record.get("subject")  # decoded records are dicts: `type is dict` spares the ABC check
    if type(subject) is dict or isinstance(subject, Mapping):
        bio = subject.get("biometrics")
        if bio is not None and (type(bio) is dict or isinstance(bio, Mapping)):
            found.update((BIOMETRICS, cat) for name, cat in FIELD_CATEGORY.items() if bio.get(name))
        for entry in subject.get("identifiers") or ():
            if type(entry) is dict or isinstance(entry, Mapping):
                cats = biometric_categories(entry.get("scheme"))
                if cats:
                    found.update((IDENTIFIERS, cat) for cat in cats)
    criteria = record.get("criteria")
    if criteria is not None and (type(criteria) is dict or isinstance(criteria, Mapping)):
        for key in criteria:
            found.update((CRITERIA, cat) for cat in biometric_categories(key))
    return frozenset(found)


def categories_in(record: Mapping[str, Any]) -> frozenset[str]:
    """Biometric categories whose values the record actually holds, wherever they sit."""
    return frozenset(cat for _, cat in locate(record))


@lru_cache(maxsize=256)
def paths_for(categories: frozenset[str], found: Found = frozenset()) -> tuple[str, ...]:
    """The paths to remove for these categories, sorted.

    Args:
        categories: the categories the recipient may not receive.
        found: (place, category) of the entries of `SELECTED` places the message holds (`locate`);
            a place gets a path only for categories it holds.
    """
    paths = {p for c in categories for p in CATEGORY_PATHS.get(c, ())}
    if BIOMETRICS in paths or paths >= _ALL_FIELDS:
        paths = {BIOMETRICS}
    generic = GENERIC in categories
    for place, cat in found:
        if place in SELECTED and (generic or cat in categories):
            paths.add(f"{place}[{GENERIC if generic else cat}]")
    return tuple(sorted(paths))


def apply_redactions(record: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """A new record with `paths` emptied or filtered, listed in envelope.redactions.

    A field path is emptied (null, or [] for a list); `place[CATEGORY]` removes the entries of that
    category from a list of identifiers or a map of criteria. The input is never changed. Only the
    containers along each path are copied; everything else is shared with the input, so treat both
    as read-only (as decoded records are).
    """
    out = dict(record)
    for path in paths:
        place, _, selector = path.partition("[")
        _clear(out, place.split("."), selector.rstrip("]") if selector else None)
    envelope = out.get("envelope")
    if isinstance(envelope, Mapping):
        envelope = dict(envelope)
        done = list(envelope.get("redactions") or ())
        envelope["redactions"] = done + [p for p in _unique(paths) if p not in done]
        out["envelope"] = envelope
    return out


def _clear(root: dict[str, Any], parts: list[str], category: str | None) -> None:
    node = root
    for key in parts[:-1]:
        child = node.get(key)
        if not isinstance(child, Mapping):
            return  # nothing there to remove
        node[key] = node = dict(child)
    last = parts[-1]
    if last not in node:
        return
    value = node[last]
    if category is None:
        node[last] = [] if isinstance(value, list) else None
    elif isinstance(value, Mapping):
        node[last] = {k: v for k, v in value.items() if not _selects(category, k)}
    elif isinstance(value, list):
        node[last] = [e for e in value
                      if not (isinstance(e, Mapping) and _selects(category, e.get("scheme")))]


def _selects(category: str, name: object) -> bool:
    found = biometric_categories(name)
    return bool(found) if category == GENERIC else category in found


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
