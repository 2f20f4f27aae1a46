"""One error hierarchy for the whole bus, so that one place can decide retry, dead-letter or crash.

Outcomes (a message denied by a sharing rule) are not errors; these are faults.
"""

from __future__ import annotations


class LiaisonError(Exception):
    """Root of every fault Liaison raises on purpose."""

    retriable: bool = False


class ConfigError(LiaisonError, ValueError):
    """Settings or a configuration file are wrong; the process cannot start."""


class BrokerUnavailable(LiaisonError):
    """The Kafka broker could not be reached in time; trying again later may work."""

    retriable = True


class LocalBrokerError(LiaisonError):
    """The local development broker could not be set up, started or stopped."""


class DecodeError(LiaisonError, ValueError):
    """Bytes on the wire are not a record we can read; the record goes to the dead-letter topic."""

    code = "UNDECODABLE"  # stable code on the dead letter; subclasses name the exact fault


class SchemaError(LiaisonError, ValueError):
    """A schema is missing, malformed or incompatible."""


class RegistryStoreError(LiaisonError):
    """The schema registry service could not read or write its `_schemas` topic in time."""

    retriable = True


class RegistryError(LiaisonError):
    """The schema registry refused a request or could not be reached."""

    def __init__(self, message: str, *, status: int = 0, error_code: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code

    @property
    def retriable(self) -> bool:  # type: ignore[override]  # depends on the HTTP status
        return self.status == 0 or self.status >= 500
