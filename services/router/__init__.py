"""The router: reads every outbox, enforces each sender's sharing terms, delivers exactly once."""
