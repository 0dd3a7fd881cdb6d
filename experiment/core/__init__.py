"""The domain rules: pure, no engines."""
