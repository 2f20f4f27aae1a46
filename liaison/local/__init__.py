"""The local development stack: a single-node KRaft broker from Maven Central jars, no Docker."""
