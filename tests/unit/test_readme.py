"""The README is the operators' reference: every code the bus can emit is explained there."""

from __future__ import annotations

from pathlib import Path

from liaison import codec
from liaison.policy import REASONS
from liaison.security.acls import readme_table
from services.router.limits import CODES as LIMIT_CODES
from services.router.pipeline import WrongType

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_policy_reason_code_is_documented() -> None:
    """Each stable reason code of the policy engine has a row in the README."""
    assert [code for code in REASONS if f"`{code}`" not in README] == []


def test_every_dead_letter_code_is_documented() -> None:
    """Each error code the router puts on a dead letter is named in the README."""
    codes = [cls.code for cls in (codec.BadMagicByte, codec.UnknownSchemaId, codec.TruncatedRecord,
                                  codec.SchemaMismatch, WrongType)] + list(LIMIT_CODES)
    assert [code for code in codes if f"`{code}`" not in README] == []


def test_the_acl_table_is_the_one_the_code_applies() -> None:
    """Every row of the least-privilege table, rendered from liaison.security.acls, is in the README."""
    assert [row for row in readme_table() if row not in README] == []
