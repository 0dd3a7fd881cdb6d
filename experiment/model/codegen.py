"""The per-record path: Python source generated from the IR, one nested ``if``/``else`` per tree, compiled once.

Why generate code: scoring one session in the job must cost a few microseconds, and straight-line comparisons of
local floats are the fastest thing CPython runs. A split on a monotone derived field (the scaler's
``(x - mean) / scale``) is folded into an exact comparison of the raw input (`_fold`), so the scaler's arithmetic
disappears from the hot path without changing a single answer. A missing or infinite value makes the generated
function return None, and the caller then takes the batch path, which applies the file's missing-value rules exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import numpy as np

from experiment.core.errors import ModelError
from experiment.model.batch import eval_expr
from experiment.model.ir import (
    COMPARISONS,
    ConstExpr,
    Expr,
    FieldExpr,
    ModelSpec,
    Node,
    dependency_order,
    expr_refs,
    split_nodes,
)

__all__ = ["RowFunction", "compile_source", "generate_source"]

#: The generated `score_row(get)`: the sum of tree scores, or None when a used value is missing or infinite.
RowFunction = Callable[[Callable[..., float]], float | None]


def _expr_source(expr: Expr, names: Mapping[str, str]) -> str:
    if isinstance(expr, FieldExpr):
        return names[expr.name]
    if isinstance(expr, ConstExpr):
        return f"({expr.value!r})"
    return f"({_expr_source(expr.left, names)} {expr.function} {_expr_source(expr.right, names)})"


def _tree_source(node: Node, conditions: Mapping[tuple[str, str, float], str], indent: int, out: list[str]) -> None:
    """Nested if/else for one tree; the generated function only runs when no used value is missing."""
    pad = "    " * indent
    if node.is_leaf:
        out.append(f"{pad}s += {node.score!r}")
        return
    assert node.first is not None and node.second is not None
    out.append(f"{pad}if {conditions[(node.field or '', node.op, node.threshold)]}:")
    _tree_source(node.first, conditions, indent + 1, out)
    out.append(f"{pad}else:")
    _tree_source(node.second, conditions, indent + 1, out)


_SIGN_BIT = np.int64(-0x8000000000000000)
_MAGNITUDE = np.int64(0x7FFFFFFFFFFFFFFF)
_NP_COMPARE = {
    "lessThan": np.less,
    "lessOrEqual": np.less_equal,
    "greaterThan": np.greater,
    "greaterOrEqual": np.greater_equal,
}


def _to_key(x: np.ndarray) -> np.ndarray:
    """Doubles → int64 keys in the same order (-0.0 and +0.0 share key 0, which is harmless: see `_fold`)."""
    bits = np.asarray(x, dtype=np.float64).view(np.int64)
    return np.where(bits >= 0, bits, -(bits & _MAGNITUDE))


def _from_key(k: np.ndarray) -> np.ndarray:
    bits = np.where(k >= 0, k, (-k) | _SIGN_BIT)
    return bits.astype(np.int64).view(np.float64)


def _monotone_input(expr: Expr, derived: Mapping[str, Expr]) -> str | None:
    """The single input that `expr` is a monotone function of, or None.

    Monotone because every step is `+ - * /` with a finite constant (non-zero for `*` and `/`, and only as the
    divisor) and IEEE rounding is monotone: if u <= v then fl(u ∘ c) <= fl(v ∘ c) for increasing steps.
    """
    if isinstance(expr, FieldExpr):
        if expr.name in derived:
            return _monotone_input(derived[expr.name], derived)
        return expr.name
    if isinstance(expr, ConstExpr):
        return None
    left_const = isinstance(expr.left, ConstExpr)
    right_const = isinstance(expr.right, ConstExpr)
    if left_const == right_const:
        return None
    const = expr.left if left_const else expr.right
    assert isinstance(const, ConstExpr)
    if not math.isfinite(const.value):
        return None
    if expr.function in {"*", "/"} and const.value == 0.0:
        return None
    if expr.function == "/" and left_const:
        return None
    return _monotone_input(expr.right if left_const else expr.left, derived)


def _fold(
    field: str, expr: Expr, derived: Mapping[str, Expr], source: str, var: str, splits: Sequence[tuple[str, float]]
) -> dict[tuple[str, str, float], str]:
    """Rewrite `derived(x) op t` as one comparison of the raw input `x` against an exact double cut.

    `derived` is monotone in `x` (`_monotone_input`), so each condition holds on a down-set `x < c` or an up-set
    `x >= c` of the doubles. `c` is found by bisection over the ordered doubles, evaluating the very same IEEE
    double operations the engine performs, so the rewrite is exact for every double input (±0.0 give identical
    results, so sharing one key cannot matter). This saves the per-record arithmetic of the scaler.
    """
    ops = np.array([op for op, _ in splits])
    thresholds = np.array([t for _, t in splits], dtype=np.float64)
    groups = [(_NP_COMPARE[op], ops == op) for op in sorted(set(ops.tolist()))]

    def holds(x: np.ndarray) -> np.ndarray:
        value = np.broadcast_to(np.asarray(eval_expr(expr, _Lazy(derived, source, x)), dtype=np.float64), x.shape)
        out = np.empty(len(ops), dtype=bool)
        for compare, mask in groups:
            out[mask] = compare(value[mask], thresholds[mask])
        return out

    n = len(splits)
    at_low = holds(np.full(n, -np.inf))
    at_high = holds(np.full(n, np.inf))
    down = at_low & ~at_high  # true below a cut: `x < c`

    # P(x) is False at -inf and True at +inf for every non-constant condition.
    def target(x: np.ndarray) -> np.ndarray:
        h = holds(x)
        return np.where(down, ~h, h)

    at_zero = target(np.zeros(n))
    lo = np.where(at_zero, _to_key(np.full(n, -np.inf)), np.int64(0))
    hi = np.where(at_zero, np.int64(0), _to_key(np.full(n, np.inf)))
    lo = np.where(at_zero, lo, np.int64(0))
    # At key 0 with P(0) False the invariant P(lo) False holds; with P(0) True, P(hi = 0) True holds.
    for _ in range(70):
        active = hi - lo > 1
        if not active.any():
            break
        mid = lo + (hi - lo) // 2
        p_mid = target(_from_key(mid))
        hi = np.where(active & p_mid, mid, hi)
        lo = np.where(active & ~p_mid, mid, lo)
    cut = _from_key(hi)
    conditions = {}
    for i, (op, t) in enumerate(splits):
        if at_low[i] == at_high[i]:
            text = "True" if at_low[i] else "False"
        else:
            value = "inf" if math.isinf(cut[i]) else repr(float(cut[i]))
            text = f"{var} < {value}" if down[i] else f"{var} >= {value}"
        conditions[(field, op, t)] = text
    return conditions


class _Lazy(dict[str, np.ndarray | float]):
    """Field values for `eval_expr`: the one input is `x`, derived fields are evaluated on demand."""

    def __init__(self, derived: Mapping[str, Expr], source: str, x: np.ndarray) -> None:
        super().__init__({source: x})
        self._derived = derived

    def __missing__(self, name: str) -> np.ndarray | float:
        value = eval_expr(self._derived[name], self)
        self[name] = value
        return value


def generate_source(spec: ModelSpec, used: Sequence[str]) -> str:
    """Python source of `score_row(get) -> float | None` (None: a used value is missing, take the slow path).

    Inputs are read with `get(name, 0.0)` (an absent feature counts as 0). A split on a monotone derived field
    (the scaler's `(x - mean) / scale`) becomes an exact comparison of the raw input (`_fold`); any other derived
    field is computed with the same double operations as the file. Each tree adds its leaf in segment order.
    """
    derived = dict(spec.derived)
    splits: dict[str, dict[tuple[str, float], None]] = {name: {} for name in used}
    for node in split_nodes(spec.trees):
        splits[node.field or ""][(node.op, node.threshold)] = None
    folded = {
        name: src for name in used if name in derived and (src := _monotone_input(derived[name], derived)) is not None
    }
    compared = [name for name in used if name not in folded]
    compared += [src for src in dict.fromkeys(folded.values()) if src not in compared]
    names: dict[str, str] = {}
    lines = ["def score_row(get):"]
    order = dependency_order(derived, compared)
    in_general_exprs = {
        ref for name in order if name in derived and name not in folded for ref in expr_refs(derived[name])
    }
    compared_inputs = {name for name in compared if name not in derived and name not in in_general_exprs}
    for i, name in enumerate(order):
        var = f"v{i}"
        if name in derived:
            lines.append(f"    {var} = {_expr_source(derived[name], names)}")
        else:
            # `+ 0.0` turns an int (JSON counts) into a float once, so that the many comparisons below run
            # float-to-float (about twice as fast); it only changes -0.0 to 0.0, which compare equal. Inputs
            # that feed a general derived expression keep their exact value (`c / x` tells -0.0 from 0.0).
            plus = " + 0.0" if name in compared_inputs else ""
            lines.append(f"    {var} = get({name!r}, 0.0){plus}")
            if name in spec.missing_replacements:
                lines.append(f"    if {var} != {var}: {var} = {spec.missing_replacements[name]!r}")
        names[name] = var
    conditions: dict[tuple[str, str, float], str] = {}
    for name in used:
        if name in folded:
            conditions.update(
                _fold(name, derived[name], derived, folded[name], names[folded[name]], list(splits[name]))
            )
        else:
            for op, t in splits[name]:
                conditions[(name, op, t)] = f"{names[name]} {COMPARISONS[op]} {t!r}"
    if compared:
        # One test for all values: a NaN (missing) or infinite value makes `c - c` NaN; the slow path then
        # applies the file's missing-value rules exactly.
        lines.append(f"    c = {' + '.join(names[n] for n in compared)}")
        lines.append("    if c - c != 0.0:")
        lines.append("        return None")
    lines.append("    s = 0.0")
    for tree in spec.trees:
        _tree_source(tree, conditions, 1, lines)
    lines.append("    return s")
    return "\n".join(lines) + "\n"


def compile_source(source: str) -> RowFunction:
    """Compile `generate_source`'s text once and return its `score_row` function."""
    namespace: dict[str, object] = {"inf": math.inf}
    exec(compile(source, "<compiled-pmml>", "exec"), namespace)
    score_row = namespace.get("score_row")
    if not callable(score_row):
        raise ModelError("the generated scorer source defines no score_row function")
    return cast(RowFunction, score_row)
