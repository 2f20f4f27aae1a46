"""The Python SDK for agency systems: build, send and receive bus messages."""

from liaison.sdk.builders import alert, envelope, query, reply

__all__ = ["alert", "envelope", "query", "reply"]
