"""pypmml, the reference PMML engine every fast path is compared with.

Why a wrapper: pypmml answers NaN when a feature key is absent while our scorers count an absent feature as 0, and
its DataFrame API writes inputs as JSON with 10 significant digits; this wrapper fills absent features with 0 and
sends round-trip float text, so that both engines see the same numbers. The file passes
`experiment.model.pmml_guard.check_pmml` first: pypmml's Java parser would otherwise resolve DTDs and entities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from experiment.core.errors import ModelError
from experiment.model.batch import feature_matrix
from experiment.model.pmml_guard import check_pmml

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PmmlReference", "release_reference_engine"]


class PmmlReference:
    """pypmml's evaluator for one PMML file: the reference every fast path is compared with.

    pypmml returns NaN when a feature key is absent; our scorers count an absent feature as 0, so this wrapper
    fills absent features with 0 too (an explicit NaN still means "missing", as in PMML). Batch prediction sends
    one JSON document through the gateway, written with round-trip float text (pandas' own `to_json` keeps only
    10 significant digits, which would change the inputs). Use as a context manager or call `open()`/`close()`.
    """

    def __init__(self, pmml_path: str | Path) -> None:
        self.pmml_path = Path(pmml_path)
        self._model: Any = None
        self.feature_names: tuple[str, ...] = ()
        self._probability_column = ""

    def open(self) -> PmmlReference:
        """Start (or reuse) pypmml's JVM gateway and load the model."""
        if self._model is not None:
            return self
        if not self.pmml_path.is_file():
            raise ModelError(f"PMML file {self.pmml_path} does not exist")
        check_pmml(self.pmml_path)  # pypmml's Java parser resolves DTDs and entities: it only gets what passed
        from pypmml import Model  # heavy: starts a JVM on first use

        try:
            model = Model.fromFile(str(self.pmml_path))
        except Exception as exc:  # pypmml wraps every Java failure in a py4j error
            raise ModelError(f"pypmml cannot load {self.pmml_path}: {exc}") from exc
        probability = [f.name for f in model.outputFields if f.feature == "probability" and str(f.value) == "1"]
        if not probability:
            raise ModelError(f"{self.pmml_path} declares no probability output field for class '1'")
        self._model = model
        self.feature_names = tuple(model.inputNames)
        self._probability_column = probability[0]
        return self

    def close(self) -> None:
        """Drop the model (the shared gateway stays up for other models in this process)."""
        self._model = None

    def __enter__(self) -> PmmlReference:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("PmmlReference holds a JVM handle and is never pickled: build it in open()")

    def _require_open(self) -> Any:
        if self._model is None:
            raise ModelError(f"PmmlReference for {self.pmml_path} is not open; call open() first")
        return self._model

    def predict(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """P(class = 1) per row with pypmml's batch API; absent columns count as 0."""
        model = self._require_open()
        matrix = feature_matrix(features, self.feature_names)
        if len(matrix) == 0:
            return np.zeros(0)
        rows = [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]
        document = json.dumps({"columns": list(self.feature_names), "data": rows})
        try:
            answer = json.loads(model.call("predict", document))
        except Exception as exc:
            raise ModelError(f"pypmml failed to score {len(rows)} rows with {self.pmml_path}: {exc}") from exc
        column = answer["columns"].index(self._probability_column)
        return np.array([_nan_if_null(row[column]) for row in answer["data"]], dtype=np.float64)

    def predict_one(self, features: Mapping[str, float]) -> float:
        """P(class = 1) for one record (one gateway round trip: the slow baseline); absent features count as 0."""
        model = self._require_open()
        record = {name: float(features.get(name, 0.0)) for name in self.feature_names}
        result = model.predict(record)
        return _nan_if_null(result.get(self._probability_column))


def release_reference_engine() -> None:
    """Stop pypmml's JVM gateway (a separate java process, a few hundred MB); the next `open()` starts it again."""
    from pypmml import Model

    Model.close()


def _nan_if_null(value: Any) -> float:
    return math.nan if value is None else float(value)
