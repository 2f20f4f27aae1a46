"""What every service shares: settings, logging, metrics and the service lifecycle."""
