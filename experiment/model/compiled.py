"""Compile our exported PMML (StandardScaler → XGBoost → logistic link) into fast native evaluators.

Why: pypmml answers one record per py4j round trip, orders of magnitude below what the decision job needs. The
PMML we export is small and regular, so we compile exactly that shape into

- a numpy batch evaluator that walks every tree of the ensemble level by level for all rows at once
  (`experiment.model.batch`), and
- a per-record evaluator: generated Python source with one nested ``if``/``else`` per tree, compiled once
  (`experiment.model.codegen`).

Both follow PMML 4.4 semantics to the bit where it matters for parity with pypmml (the reference):

- derived fields are computed with the exact double operations written in the file (``(x - mean) / scale``);
- ``SimplePredicate`` comparisons run in double precision with the operator as written (``lessThan`` is ``<``);
- a missing input (NaN) follows the tree's ``missingValueStrategy`` / ``noTrueChildStrategy``; a tree that
  yields no prediction makes the whole score missing (NaN), as pypmml does;
- tree scores are summed in segment order (``sum``), then the ``RegressionModel`` applies intercept, coefficient
  and the ``logit`` link ``1 / (1 + exp(-y))``.

Anything outside that shape raises `ModelError` naming the unsupported element (`experiment.model.parse`), so that a
differently shaped model never gets a silently wrong fast path. Equality with pypmml is then proven per model at
load time (`experiment.model.scorer`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from experiment.model.batch import BatchEvaluator, feature_matrix
from experiment.model.codegen import compile_source, generate_source
from experiment.model.ir import ModelSpec, split_fields
from experiment.model.parse import parse_pmml

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CompiledModel", "compile_pmml"]


class CompiledModel:
    """Fast evaluators for one `ModelSpec`: `score_batch` (numpy) and `score_one` (generated code).

    Built in the job's `open()`; holds generated code, so it refuses to be pickled.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.feature_names: tuple[str, ...] = spec.input_fields
        self._batch = BatchEvaluator(spec)
        self.source = generate_source(spec, split_fields(spec))
        self._score_row = compile_source(self.source)
        self._exp = math.exp

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("CompiledModel holds generated code and is never pickled: build it in open()")

    @property
    def depth(self) -> int:
        """Levels of the deepest tree: the number of steps one batch walk takes."""
        return self._batch.arrays.depth

    def score_batch(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """P(class = 1) for every row: numpy array (rows × `feature_names`) or DataFrame (by column name)."""
        return self._link(self._batch.tree_sums(feature_matrix(features, self.feature_names)))

    def _link(self, total: np.ndarray) -> np.ndarray:
        y = self.spec.intercept + self.spec.coefficient * total
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-y))
        return p if self.spec.positive_is_first_table else 1.0 - p

    def score_one(self, features: Mapping[str, float]) -> float:
        """P(class = 1) for one record; absent features count as 0, NaN is a missing value (PMML semantics)."""
        total = self._score_row(features.get)
        if total is None:  # a used value is missing: follow the file's missing-value rules exactly
            row = np.array([[features.get(name, 0.0) for name in self.feature_names]], dtype=np.float64)
            return float(self.score_batch(row)[0])
        y = self.spec.intercept + self.spec.coefficient * total
        try:
            p = 1.0 / (1.0 + self._exp(-y))
        except OverflowError:
            p = 0.0
        return p if self.spec.positive_is_first_table else 1.0 - p


def compile_pmml(data: bytes, *, source: str = "<bytes>") -> CompiledModel:
    """Parse and compile PMML bytes (see `experiment.model.parse.parse_pmml` for what is supported)."""
    return CompiledModel(parse_pmml(data, source=source))
