"""A stand-in model for the decision rules' tests: the same score for every session, and how often it was asked."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Fixed"]


class Fixed:
    """A model giving every session the same score, counting its calls."""

    def __init__(self, score: float) -> None:
        self.score = score
        self.calls = 0

    def score_one(self, features: Mapping[str, float]) -> float:
        self.calls += 1
        return self.score
