"""Field-level redaction: which paths hold which protected data, and removing them from a copy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

BIOMETRICS = "subject.biometrics"

CATEGORY_PATHS: dict[str, tuple[str, ...]] = {
    "BIOMETRIC": (BIOMETRICS,),
    "DNA": (f"{BIOMETRICS}.dna_profile",),
    "FINGERPRINT": (f"{BIOMETRICS}.fingerprint_ref", f"{BIOMETRICS}.fingerprints"),
    "FACIAL_IMAGE": (f"{BIOMETRICS}.facial_image",),
}
"""Protected data category -> the field paths that hold it (the same in Alert, Query and Reply)."""

FIELD_CATEGORY: dict[str, str] = {"dna_profile": "DNA", "fingerprint_ref": "FINGERPRINT",
                                  "fingerprints": "FINGERPRINT", "facial_image": "FACIAL_IMAGE"}
"""Field of `liaison.Biometrics` -> the category its value belongs to."""

_ALL_FIELDS = frozenset(p for c in ("DNA", "FINGERPRINT", "FACIAL_IMAGE") for p in CATEGORY_PATHS[c])


def categories_in(record: Mapping[str, Any]) -> frozenset[str]:
    """Biometric categories whose values the record's subject actually holds, declared or not."""
    subject = record.get("subject")
    bio = subject.get("biometrics") if subject else None
    if not bio:
        return frozenset()
    return frozenset(cat for name, cat in FIELD_CATEGORY.items() if bio.get(name))


@lru_cache(maxsize=64)
def paths_for(categories: frozenset[str]) -> tuple[str, ...]:
    """The field paths to remove for these categories, sorted; the whole record when all of it goes."""
    paths = {p for c in categories for p in CATEGORY_PATHS.get(c, ())}
    if BIOMETRICS in paths or paths >= _ALL_FIELDS:
        return (BIOMETRICS,)
    return tuple(sorted(paths))


def apply_redactions(record: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """A new record with `paths` emptied (null, or [] for a list) and listed in envelope.redactions.

    The input is never changed. Only the dicts along each path are copied; everything else is shared
    with the input, so treat both as read-only (as decoded records are).
    """
    out = dict(record)
    for path in paths:
        _clear(out, path.split("."))
    envelope = out.get("envelope")
    if isinstance(envelope, Mapping):
        envelope = dict(envelope)
        done = list(envelope.get("redactions") or ())
        envelope["redactions"] = done + [p for p in _unique(paths) if p not in done]
        out["envelope"] = envelope
    return out


def _clear(root: dict[str, Any], parts: list[str]) -> None:
    node = root
    for key in parts[:-1]:
        child = node.get(key)
        if not isinstance(child, Mapping):
            return  # nothing there to remove
        node[key] = node = dict(child)
    last = parts[-1]
    if last in node:
        node[last] = [] if isinstance(node[last], list) else None


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
