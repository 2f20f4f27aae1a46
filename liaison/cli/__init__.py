"""The `liaison` command: operators' tools and the local stack."""
