"""Typed results of the statistical tests.

Every result names its `method` and carries, for each field that is `None`, a machine-readable `Reason` in
`reasons`. The constructors check that contract (no NaN, no infinity, no unexplained `None`), so a bug that
would silently produce a NaN fails loudly where it happens instead of in a report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

from experiment.stats.messages import Reason

__all__ = [
    "Comparison",
    "Interval",
    "ProportionsResult",
    "Reason",
    "check_finite",
    "to_plain",
]


@dataclass(frozen=True, slots=True)
class Interval:
    """A closed interval [lower, upper] on the scale of the estimate it belongs to."""

    lower: float
    upper: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError(f"Interval bounds must be finite, got [{self.lower}, {self.upper}]")
        if self.lower > self.upper:
            raise ValueError(f"Interval lower bound {self.lower} exceeds upper bound {self.upper}")

    def contains(self, value: float) -> bool:
        """True when `value` lies in the closed interval."""
        return self.lower <= value <= self.upper

    @property
    def width(self) -> float:
        """Upper − lower."""
        return self.upper - self.lower


def check_finite(obj: Any) -> None:
    """Raise if a result dataclass holds NaN/inf, or a `None` field without a reason in `obj.reasons`."""
    reasons: Mapping[str, Reason] = getattr(obj, "reasons", {})
    for f in fields(obj):
        if f.name == "reasons":
            continue
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{type(obj).__name__}.{f.name} is {value}; undefined values must be None + reason")
        if value is None and f.metadata.get("nullable") and f.name not in reasons:
            raise ValueError(f"{type(obj).__name__}.{f.name} is None without a reason")


# Metadata of a result field that may be None, in which case `reasons[name]` must say why.
_NULLABLE = {"nullable": True}


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Treatment versus control on one metric by one method.

    Scales: `control_value`/`treatment_value` are the metric's per-user mean (a rate for conversion, currency
    units for revenue per user); `abs_diff`/`abs_ci` are treatment − control on that scale; `rel_lift`/`rel_ci` are
    treatment / control − 1 (a fraction: 0.05 = +5 %). `p_value` is two-sided for H0: no difference, and is consistent
    with `abs_ci` (p < alpha exactly when 0 lies outside `abs_ci`).
    """

    method: str
    alpha: float
    control_value: float | None = field(default=None, metadata=_NULLABLE)
    treatment_value: float | None = field(default=None, metadata=_NULLABLE)
    abs_diff: float | None = field(default=None, metadata=_NULLABLE)
    abs_ci: Interval | None = field(default=None, metadata=_NULLABLE)
    rel_lift: float | None = field(default=None, metadata=_NULLABLE)
    rel_ci: Interval | None = field(default=None, metadata=_NULLABLE)
    p_value: float | None = field(default=None, metadata=_NULLABLE)
    reasons: Mapping[str, Reason] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        check_finite(self)

    @property
    def significant(self) -> bool | None:
        """P < alpha, or None when the p-value is undefined."""
        return None if self.p_value is None else self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: intervals become [lower, upper], reasons become strings."""
        return to_plain(self)


@dataclass(frozen=True, kw_only=True)
class ProportionsResult(Comparison):
    """Two-proportion comparison (conversion); adds the pooled z-test and the relative-lift p-value.

    `p_value` is the unpooled (Wald) z-test, consistent with `abs_ci`; `p_value_pooled` is the classic pooled
    two-proportion z-test (statsmodels `proportions_ztest`); `rel_p_value` is consistent with `rel_ci`.
    """

    abs_se: float | None = field(default=None, metadata=_NULLABLE)
    rel_se: float | None = field(default=None, metadata=_NULLABLE)
    rel_p_value: float | None = field(default=None, metadata=_NULLABLE)
    p_value_pooled: float | None = field(default=None, metadata=_NULLABLE)


def to_plain(value: Any) -> Any:
    """Convert results (dataclasses, intervals, enums, mappings) to JSON-ready builtins, recursively."""
    if isinstance(value, Interval):
        return [value.lower, value.upper]
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"refusing to serialise non-finite float {value}")
    return value
