"""The simulated website."""
