"""The proof that a compiled model equals pypmml: score the same rows with both engines and report the largest |ΔP|.

Why rows plus probes: a test set shows the model on realistic inputs, but ties at split points, exactly where a fast
path and a PMML engine could disagree (``<`` against ``<=``), are rare in it. `probe_rows` therefore adds synthetic
rows on and one or two ulps around the model's own cut points. The verifier never reads files: callers pass the
rows (the job side reads the model's test set with `experiment.model.rows`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from experiment.core.errors import ModelError
from experiment.model.batch import feature_matrix
from experiment.model.compiled import CompiledModel
from experiment.model.ir import ApplyExpr, ConstExpr, Expr, FieldExpr, ModelSpec, split_nodes
from experiment.model.reference import PmmlReference

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_PROBES", "DEFAULT_TOLERANCE", "ParityReport", "probe_rows", "verify"]

#: The largest |ΔP| between the fast path and pypmml that a verified scorer accepts.
DEFAULT_TOLERANCE = 1e-9
#: Synthetic split-point rows added to every verification (a small share of the load time).
DEFAULT_PROBES = 1000


@dataclass(frozen=True)
class ParityReport:
    """How the fast path compared with pypmml at load time (log it; put it in metrics/reports)."""

    rows: int
    rows_source: str
    max_abs_diff: float
    mean_abs_diff: float
    rows_over_tolerance: int
    worst_row: int
    tolerance: float
    reference_seconds: float
    compiled_seconds: float
    passed: bool

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able numbers."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def verify(
    compiled: CompiledModel,
    reference: PmmlReference,
    rows: pd.DataFrame | np.ndarray,
    *,
    source: str = "rows",
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Score `rows` with pypmml (batch) and with both compiled paths; report the largest |ΔP|.

    NaN equals NaN (both engines agree that the record has no prediction); NaN against a number counts as an
    infinite difference.
    """
    matrix = feature_matrix(rows, compiled.feature_names)
    if len(matrix) == 0:
        raise ModelError(f"no reference rows to verify the scorer on ({source})")
    t0 = time.perf_counter()
    expected = reference.predict(matrix)
    t1 = time.perf_counter()
    batch = compiled.score_batch(matrix)
    t2 = time.perf_counter()
    names = compiled.feature_names
    one = np.array([compiled.score_one(dict(zip(names, row, strict=True))) for row in matrix.tolist()])
    diff = np.maximum(_abs_diff(batch, expected), _abs_diff(one, expected))
    worst = int(np.argmax(diff))
    max_diff = float(diff[worst])
    return ParityReport(
        rows=len(matrix),
        rows_source=source,
        max_abs_diff=max_diff,
        mean_abs_diff=float(np.mean(diff[np.isfinite(diff)])) if np.isfinite(diff).any() else math.inf,
        rows_over_tolerance=int(np.sum(diff > tolerance)),
        worst_row=worst,
        tolerance=tolerance,
        reference_seconds=t1 - t0,
        compiled_seconds=t2 - t1,
        passed=bool(max_diff <= tolerance),
    )


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both_nan = np.isnan(a) & np.isnan(b)
    one_nan = np.isnan(a) ^ np.isnan(b)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    diff[both_nan] = 0.0
    diff[one_nan] = math.inf
    return diff


def probe_rows(spec: ModelSpec, n: int = 2000, seed: int = 0) -> np.ndarray:
    """Synthetic rows (in `spec.input_fields` order) whose values sit on, just below and just above split points.

    Why: ties at cut points are exactly where a PMML engine and a fast path could disagree (XGBoost's float32
    thresholds), and a random sample rarely hits them. For a split field defined as an affine function of one input
    (our StandardScaler fields), each value is the input that maps to a random cut point of that field, nudged
    by -2..+2 ulps; other inputs get small non-negative integers, like purchase counts.
    """
    rng = np.random.default_rng(seed)
    inputs = list(spec.input_fields)
    matrix = rng.integers(0, 4, size=(n, len(inputs))).astype(np.float64)
    derived = dict(spec.derived)
    cuts: dict[str, list[float]] = {}
    for node in split_nodes(spec.trees):
        cuts.setdefault(node.field or "", []).append(node.threshold)
    for field, thresholds in cuts.items():
        inverse = _affine_inverse(field, derived)
        if inverse is None:
            continue
        source, invert = inverse
        if source not in inputs:
            continue
        j = inputs.index(source)
        picks = np.asarray(thresholds)[rng.integers(0, len(thresholds), size=n)]
        values = np.array([invert(float(t)) for t in picks])
        for _ in range(2):
            step = rng.integers(-1, 2, size=n)
            values = np.where(
                step < 0, np.nextafter(values, -np.inf), np.where(step > 0, np.nextafter(values, np.inf), values)
            )
        use = rng.random(n) < 0.5
        matrix[use, j] = values[use]
    return matrix


def _affine_inverse(field: str, derived: Mapping[str, Expr]) -> tuple[str, Callable[[float], float]] | None:
    """For `field = (x - a) / b` (or `x`), the input name and an approximate inverse; else None."""
    expr = derived.get(field)
    if expr is None:
        return field, lambda t: t
    if (
        isinstance(expr, ApplyExpr)
        and expr.function == "/"
        and isinstance(expr.right, ConstExpr)
        and isinstance(expr.left, ApplyExpr)
        and expr.left.function == "-"
        and isinstance(expr.left.left, FieldExpr)
        and isinstance(expr.left.right, ConstExpr)
    ):
        mean, scale = expr.left.right.value, expr.right.value
        return expr.left.left.name, lambda t: t * scale + mean
    return None
