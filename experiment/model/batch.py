"""The batch path: the whole ensemble flattened into arrays and walked with numpy, every tree and row at once.

Why arrays: a Python loop over trees per row is far too slow for scoring a test set or a simulated population, while
walking all (row, tree) pairs one level per numpy step costs a few vectorised `take`s per level. The walk follows
the same PMML semantics as the generated per-record code (`experiment.model.codegen`): double comparisons with the
operator as written, the file's missing-value rules, and tree scores summed in segment order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from experiment.core.errors import ModelError
from experiment.model.ir import ConstExpr, Expr, FieldExpr, ModelSpec, Node, dependency_order, split_fields

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BatchEvaluator", "TreeArrays", "eval_expr", "feature_matrix", "flatten"]

# Rows per batch-walk chunk: keeps the (rows × trees) work arrays in cache (best at a few hundred rows).
_CHUNK_ROWS = 512


def feature_matrix(features: pd.DataFrame | np.ndarray, names: Sequence[str]) -> np.ndarray:
    """A float64 (rows × `names`) matrix: a numpy array already in that order, or a DataFrame matched by column name.

    Absent DataFrame columns count as 0 (pypmml would answer NaN for an absent key; every scorer here fills 0).
    """
    if isinstance(features, np.ndarray):
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(names):
            raise ModelError(
                f"expected a (rows, {len(names)}) array in feature order {list(names)[:5]}...; got shape {x.shape}"
            )
        return x
    columns = getattr(features, "columns", None)
    if columns is None:
        raise ModelError(f"expected a numpy array or a pandas DataFrame, got {type(features).__name__}")
    n = len(features)
    x = np.zeros((n, len(names)), dtype=np.float64)
    present = set(columns)
    for j, name in enumerate(names):
        if name in present:
            x[:, j] = np.asarray(features[name], dtype=np.float64)
    return x


def eval_expr(expr: Expr, columns: Mapping[str, np.ndarray | float]) -> np.ndarray | float:
    """An IR expression on whole columns, with the same IEEE double operations as the file names."""
    if isinstance(expr, FieldExpr):
        return columns[expr.name]
    if isinstance(expr, ConstExpr):
        return expr.value
    left = eval_expr(expr.left, columns)
    right = eval_expr(expr.right, columns)
    if expr.function == "+":
        return np.add(left, right)
    if expr.function == "-":
        return np.subtract(left, right)
    if expr.function == "*":
        return np.multiply(left, right)
    return np.divide(left, right)


@dataclass(frozen=True)
class TreeArrays:
    """Every tree of the ensemble flattened into parallel arrays (the batch path walks these level by level).

    The two children of a split are stored side by side: node `i` moves to `child[i]` when `x < threshold[i]`
    and to `child[i] + 1` when `x >= threshold[i]`. Whichever operator the file uses is mapped onto that one
    comparison exactly: `greaterOrEqual` swaps the children, and `lessOrEqual`/`greaterThan` compare against
    `nextafter(t, +inf)` (no double lies between `t` and it, so `x <= t` ⇔ `x < nextafter(t, +inf)`).
    Leaves (and the shared `null_node`) point to themselves with a NaN threshold: `x >= NaN` is False, so walking
    a fixed number of levels is harmless. `on_missing[i]` is the next node when the split value is missing: a
    child, the node itself (stop here and keep its score), or `null_node` (no prediction).
    """

    feature: np.ndarray  # intp, column of the split matrix
    threshold: np.ndarray  # float64, NaN at leaves
    child: np.ndarray  # intp, the `<` side; the `>=` side is child + 1
    on_missing: np.ndarray  # intp
    value: np.ndarray  # float64, the node's score (NaN when none)
    roots: np.ndarray  # intp, one root per tree, in segment order
    depth: int
    null_node: int


def flatten(trees: Sequence[Node], columns: Mapping[str, int]) -> TreeArrays:
    """Flatten the trees into `TreeArrays`; `columns` maps each split field to its column of the split matrix."""
    feature: list[int] = []
    threshold: list[float] = []
    child: list[int] = []
    on_missing: list[int] = []
    value: list[float] = []

    def alloc(n: Node | None) -> int:
        feature.append(0)
        threshold.append(math.nan)
        child.append(len(child))
        on_missing.append(len(on_missing))
        value.append(math.nan if n is None or n.score is None else n.score)
        return len(value) - 1

    # Breadth-first over all trees at once: the nodes one walk step touches sit together, which is faster than
    # laying out one tree after another.
    roots = [alloc(tree) for tree in trees]
    depth = 0
    level_nodes = list(zip(trees, roots, strict=True))
    while level_nodes:
        next_level: list[tuple[Node, int]] = []
        for node, idx in level_nodes:
            if node.is_leaf:
                continue
            assert node.first is not None and node.second is not None
            less_first = node.op in {"lessThan", "lessOrEqual"}
            less, more = (node.first, node.second) if less_first else (node.second, node.first)
            a = alloc(less)
            alloc(more)
            feature[idx] = columns[node.field or ""]
            strict = node.op in {"lessThan", "greaterOrEqual"}
            threshold[idx] = node.threshold if strict else math.nextafter(node.threshold, math.inf)
            child[idx] = a
            first_at = a if less_first else a + 1
            on_missing[idx] = {
                "child": first_at if node.missing_child == 0 else (a + a + 1 - first_at),
                "stay": idx,
                "null": -1,
            }[node.on_missing]
            next_level += [(less, a), (more, a + 1)]
        if next_level:
            depth += 1
        level_nodes = next_level
    null_node = alloc(None)
    miss = np.asarray(on_missing, dtype=np.intp)
    miss[miss < 0] = null_node
    return TreeArrays(
        feature=np.asarray(feature, dtype=np.intp),
        threshold=np.asarray(threshold, dtype=np.float64),
        child=np.asarray(child, dtype=np.intp),
        on_missing=miss,
        value=np.asarray(value, dtype=np.float64),
        roots=np.asarray(roots, dtype=np.intp),
        depth=depth,
        null_node=null_node,
    )


class BatchEvaluator:
    """The sum of tree scores for many rows of one `ModelSpec` (the link is applied by the caller)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._input_index = {name: i for i, name in enumerate(spec.input_fields)}
        self._derived = dict(spec.derived)
        # The split matrix holds only split fields, in first-use order.
        self._split_fields = split_fields(spec)
        self._eval_order = dependency_order(self._derived, self._split_fields)
        self.arrays = flatten(spec.trees, {name: i for i, name in enumerate(self._split_fields)})

    def tree_sums(self, x: np.ndarray) -> np.ndarray:
        """Per row of the (rows × inputs) matrix `x`: the trees' scores summed in segment order (NaN: none)."""
        n = len(x)
        if n == 0:
            return np.zeros(0)
        d = self._split_matrix(x)
        total = np.empty(n)
        for start in range(0, n, _CHUNK_ROWS):
            total[start : start + _CHUNK_ROWS] = self._tree_sum(d[start : start + _CHUNK_ROWS])
        return total

    def _split_matrix(self, x: np.ndarray) -> np.ndarray:
        values: dict[str, np.ndarray] = {}
        for name in self._eval_order:
            if name in self._derived:
                expr_value = eval_expr(self._derived[name], values)
                values[name] = np.broadcast_to(np.asarray(expr_value, dtype=np.float64), (len(x),))
                continue
            col = x[:, self._input_index[name]]
            if name in self.spec.missing_replacements:
                col = np.where(np.isnan(col), self.spec.missing_replacements[name], col)
            values[name] = col
        if not self._split_fields:
            return np.zeros((len(x), 1))
        return np.ascontiguousarray(np.column_stack([values[name] for name in self._split_fields]))

    def _tree_sum(self, d: np.ndarray) -> np.ndarray:
        """Sum of tree scores for a chunk of rows: walk all (row, tree) pairs one level per step.

        `np.take(..., mode="clip", out=...)` into preallocated buffers avoids index checks and allocations; that
        is most of the speed. Indices are always in range by construction.
        """
        a = self.arrays
        n, n_cols = d.shape
        n_trees = len(a.roots)
        flat = np.ascontiguousarray(d).ravel()
        row_base = (np.arange(n, dtype=np.intp) * n_cols)[:, None]
        node = np.empty((n, n_trees), dtype=np.intp)
        node[:] = a.roots
        col = np.empty_like(node)
        xv = np.empty((n, n_trees))
        thr = np.empty((n, n_trees))
        go_right = np.empty((n, n_trees), dtype=bool)
        has_missing = bool(np.isnan(d).any())
        for _ in range(a.depth):
            np.take(a.feature, node, out=col, mode="clip")
            col += row_base
            np.take(flat, col, out=xv, mode="clip")
            np.take(a.threshold, node, out=thr, mode="clip")
            np.greater_equal(xv, thr, out=go_right)
            if has_missing:
                missing = np.isnan(xv) & ~np.isnan(thr)
                next_node = np.take(a.child, node, mode="clip") + go_right
                node = np.where(missing, np.take(a.on_missing, node, mode="clip"), next_node)
            else:
                np.take(a.child, node, out=node, mode="clip")
                node += go_right
        leaf_values = np.take(a.value, node, mode="clip")
        total = np.zeros(n)
        for t in range(n_trees):  # sequential, in segment order, like PMML's sum
            total += leaf_values[:, t]
        return total
