"""Multiple-testing corrections across metrics and arms: statsmodels `multipletests`' Holm and BH, in plain Python.

Holm (1979) controls the family-wise error rate (the chance of any false positive) and is uniformly more
powerful than Bonferroni: use it for the decision metrics (primary metric across treatment arms). Benjamini–Hochberg
(1995) controls the false discovery rate (the expected share of false positives among discoveries): use it for the broad
table of secondary metrics. Undefined p-values stay undefined and are not counted in the family.

Why not call statsmodels: importing it (and pandas with it) took about a third of a second of every `abflow
report`. These are its formulas and its order of floating-point operations, so the adjusted p-values are the same
numbers; `tests/unit/test_stats_tests.py` checks them against `multipletests`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

__all__ = ["Correction", "adjust_p_values"]

Correction = Literal["holm", "fdr_bh"]


def adjust_p_values(
    p_values: Mapping[str, float | None], *, method: Correction, alpha: float = 0.05
) -> dict[str, float | None]:
    """Adjusted p-values (compare each with alpha) keyed like the input; None stays None."""
    if method not in ("holm", "fdr_bh"):
        raise ValueError(f"correction method must be 'holm' or 'fdr_bh', got {method!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    keys = sorted(k for k, p in p_values.items() if p is not None)
    values: list[float] = []
    for k in keys:
        p = p_values[k]
        assert p is not None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value of {k!r} must lie in [0, 1], got {p}")
        values.append(float(p))
    adjusted: dict[str, float | None] = dict.fromkeys(p_values)
    if keys:
        corrected = _holm(values) if method == "holm" else _benjamini_hochberg(values)
        adjusted.update(zip(keys, corrected, strict=True))
    return adjusted


def _holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: p_(i)·(m − i + 1) for the i-th smallest, made monotone upwards, capped at 1.

    Holm (1979), Scand. J. Statist. 6, p. 65-70; statsmodels' `multipletests(method="holm")` step by step.
    """
    m = len(p_values)
    order = sorted(range(m), key=p_values.__getitem__)  # ties get equal adjusted values whatever their order
    out = [0.0] * m
    running = -math.inf
    for rank, index in enumerate(order):
        running = max(running, p_values[index] * (m - rank))
        out[index] = min(running, 1.0)
    return out


def _benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini–Hochberg step-up adjustment: p_(i) / (i / m), made monotone downwards from the largest, capped at 1.

    Benjamini & Hochberg (1995), JRSS B 57(1), p. 289-300; statsmodels' `fdrcorrection` step by step (it divides
    by the ECDF factor i / m, computed as a float first, and so do we).
    """
    m = len(p_values)
    order = sorted(range(m), key=p_values.__getitem__)
    out = [0.0] * m
    running = math.inf
    for rank in range(m - 1, -1, -1):
        index = order[rank]
        running = min(running, p_values[index] / ((rank + 1) / float(m)))
        out[index] = min(running, 1.0)
    return out
