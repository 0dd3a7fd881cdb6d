"""Multiple-testing corrections across metrics and arms, via statsmodels `multipletests`.

Holm (1979) controls the family-wise error rate (the chance of any false positive) and is uniformly more
powerful than Bonferroni: use it for the decision metrics (primary metric across treatment arms). Benjamini–Hochberg
(1995) controls the false discovery rate (the expected share of false positives among discoveries): use it for the broad
table of secondary metrics. Undefined p-values stay undefined and are not counted in the family.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from statsmodels.stats.multitest import multipletests

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
    for k in keys:
        p = p_values[k]
        assert p is not None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value of {k!r} must lie in [0, 1], got {p}")
    adjusted: dict[str, float | None] = dict.fromkeys(p_values)
    if keys:
        _, corrected, _, _ = multipletests([p_values[k] for k in keys], alpha=alpha, method=method)
        for k, p in zip(keys, corrected, strict=True):
            adjusted[k] = float(p)
    return adjusted
