"""The results store, its collector and the reports."""
