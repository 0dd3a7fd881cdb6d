"""A Flink metric group that counts nothing, for driving `DecideFunction` without a Flink runtime."""

from __future__ import annotations

__all__ = ["NullCounter", "NullMetricGroup"]


class NullCounter:
    """Accepts increments and forgets them."""

    def inc(self, n: int = 1) -> None:
        """Nothing to count."""


class NullMetricGroup:
    """Every counter and sub-group it hands out is a null one."""

    def counter(self, name: str) -> NullCounter:
        """A counter that counts nothing."""
        return NullCounter()

    def add_group(self, *names: str) -> NullMetricGroup:
        """Itself: sub-groups count nothing either."""
        return self
