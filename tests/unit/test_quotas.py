"""Client quotas without a broker: the values, the defaults from settings, and the wire format."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest

from liaison.errors import ConfigError
from liaison.security.quotas import (
    AlterClientQuotasRequest,
    AlterClientQuotasRequest_v0,
    AlterClientQuotasResponse_v0,
    Quota,
    QuotaDefaults,
    quota_defaults,
)

MIB = 1024 * 1024


def test_quotas_speak_kafkas_names_and_keep_what_is_not_changed() -> None:
    """Unset quotas are left out; a change replaces only what it sets; defaults fill only the gaps."""
    mine = Quota(produce_bytes=2 * MIB)
    assert mine.values() == {"producer_byte_rate": 2.0 * MIB}
    assert Quota.from_values({"producer_byte_rate": 2.0 * MIB, "controller_mutation_rate": 5.0}) == mine
    defaults = Quota(MIB, 4 * MIB, 50.0)
    assert mine.missing(defaults) == Quota(None, 4 * MIB, 50.0)
    assert mine.merged(mine.missing(defaults)) == Quota(2 * MIB, 4 * MIB, 50.0)
    assert defaults.merged(Quota(request_percentage=25)) == Quota(MIB, 4 * MIB, 25)
    assert Quota().empty
    assert Quota().describe() == "produce unlimited, fetch unlimited, requests unlimited"
    assert defaults.describe() == "produce 1048576 B/s, fetch 4194304 B/s, requests 50%"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"produce_bytes": 0}, "produce bytes must be at least 1024"),
    ({"fetch_bytes": 100_000}, "fetch bytes must be at least 131072"),
    ({"request_percentage": 0.5}, "request percentage must be at least 1"),
])
def test_nonsense_quotas_are_refused_before_the_broker_sees_them(kwargs: dict[str, float],
                                                                  message: str) -> None:
    """Refused when Liaison would set them; read as they are from the broker (someone else set them)."""
    with pytest.raises(ConfigError, match=message):
        Quota(**kwargs).checked()
    values = Quota(**kwargs).values()
    assert Quota.from_values(values) == Quota(**kwargs)


def test_the_defaults_are_sized_for_real_traffic_and_read_from_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """1 MiB/s produce, 4 MiB/s fetch, 50 % of a thread, each overridable by LIAISON_AGENCY_*."""
    for name in ("PRODUCE_BYTE_RATE", "FETCH_BYTE_RATE", "REQUEST_PERCENTAGE"):
        monkeypatch.delenv(f"LIAISON_AGENCY_{name}", raising=False)
    assert quota_defaults() == Quota(MIB, 4 * MIB, 50.0)
    monkeypatch.setenv("LIAISON_AGENCY_PRODUCE_BYTE_RATE", str(3 * MIB))
    monkeypatch.setenv("LIAISON_AGENCY_REQUEST_PERCENTAGE", "12.5")
    assert quota_defaults() == Quota(3 * MIB, 4 * MIB, 12.5)
    assert QuotaDefaults().fetch_byte_rate == 4 * MIB
    monkeypatch.setenv("LIAISON_AGENCY_FETCH_BYTE_RATE", "lots")
    with pytest.raises(ConfigError, match="LIAISON_AGENCY_FETCH_BYTE_RATE") as caught:
        quota_defaults()
    assert "\n" not in str(caught.value)


def test_alter_client_quotas_is_encoded_as_kafkas_version_0() -> None:
    """API key 49 v0: entries of (entity [(type, name)], ops [(key, float64, remove)]), validate_only."""
    request = AlterClientQuotasRequest([("a.FR-PN", [("producer_byte_rate", 1024.0, False)])])
    wire = request.prepare({49: (0, 1)})
    assert isinstance(wire, AlterClientQuotasRequest_v0)
    assert (wire.API_KEY, wire.API_VERSION) == (49, 0)

    def string(text: str) -> bytes:
        return struct.pack(">h", len(text)) + text.encode()

    expected = (struct.pack(">i", 1) + struct.pack(">i", 1) + string("user") + string("a.FR-PN")
                + struct.pack(">i", 1) + string("producer_byte_rate") + struct.pack(">d", 1024.0) + b"\x00"
                + b"\x00")
    assert wire.encode() == expected


def test_an_alter_answer_is_read_with_its_error_per_entity() -> None:
    """The broker answers one entry per entity, each with its own error code and message."""
    def string(text: str | None) -> bytes:
        return struct.pack(">h", -1) if text is None else struct.pack(">h", len(text)) + text.encode()

    body = (struct.pack(">i", 0) + struct.pack(">i", 1) + struct.pack(">h", 42)
            + string("Quota producer_byte_rate must be greater than 0")
            + struct.pack(">i", 1) + string("user") + string("a.FR-PN"))
    response = AlterClientQuotasResponse_v0.decode(BytesIO(body))
    ((code, message, entity),) = response.entries
    assert (code, entity) == (42, [("user", "a.FR-PN")])
    assert message.startswith("Quota producer_byte_rate")
