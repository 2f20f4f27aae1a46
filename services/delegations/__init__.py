"""The delegations service: ends a liaison officer's broker access when its delegation ends."""
