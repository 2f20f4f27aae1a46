"""Delegations settings, from `LIAISON_*` environment variables."""

from __future__ import annotations

from pydantic import Field

from liaison.core.settings import ServiceSettings


class DelegationsSettings(ServiceSettings):
    """`LIAISON_DELEGATION_CHECK_S` on top of what every service has. It connects as a principal
    that may delete ACLs and SCRAM credentials (the bus admin): no narrower Kafka grant allows it."""

    delegation_check_s: float = Field(
        default=30.0, gt=0, description="Longest wait between two looks at the directory; a delegation "
                                        "that ends sooner, or a directory change, wakes it earlier.")
