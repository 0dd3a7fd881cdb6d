"""Where abflow runs: settings, secrets, local processes."""
