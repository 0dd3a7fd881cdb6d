"""The parity gate: the exported PMML must score like the native pipeline, or training fails.

Why: the PMML file, not the Python pipeline, makes every decision in the Flink job. A silent difference
between the two would make the experiment test a different model from the one that was evaluated. So after
export we score the whole test set with pypmml (a real PMML engine, through its batch ``predict(DataFrame)``
API; it is slow per row) and require ``max |P_pmml - P_native| <= tolerance`` (default 1e-6, on the
probability scale) and zero decision flips at the threshold (``P >= threshold`` means "show"). A NaN score
from the engine counts as a difference of 1.0 and as a flip.

pypmml returns NaN when an input key is missing, so every scorer fills absent feature columns with 0 (a
category the customer never bought), see `pmml_input`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from experiment.core.errors import ModelError, ParityError
from experiment.model.card import ParityResult
from experiment.model.pmml_guard import check_pmml

__all__ = [
    "DEFAULT_TOLERANCE",
    "PROBABILITY_FIELD",
    "ParityResult",
    "check_parity",
    "compare",
    "pmml_input",
    "require_parity",
    "score_pmml",
]

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-6
PROBABILITY_FIELD = "label_probability_1"
"""The PMML output field holding P(label = 1), as nyoka names it for target ``label``."""


def pmml_input(features: pd.DataFrame, feature_names: Sequence[str]) -> pd.DataFrame:
    """The model's inputs in order, absent columns filled with 0 (pypmml returns NaN for a missing key)."""
    frame = features.reindex(columns=list(feature_names), fill_value=0)
    return frame.fillna(0).reset_index(drop=True)


def score_pmml(pmml_path: Path | str, features: pd.DataFrame, feature_names: Sequence[str]) -> np.ndarray:
    """P(label = 1) for every row, from pypmml's batch API (starts pypmml's JVM on first use)."""
    from pypmml import Model

    path = Path(pmml_path)
    if not path.is_file():
        raise ModelError(f"{path}: PMML file not found.")
    check_pmml(path)  # pypmml's Java parser resolves DTDs and entities: it only gets a file that passed the gate
    try:
        model = Model.fromFile(str(path))
    except Exception as error:  # py4j wraps every JVM-side failure in its own exception type
        raise ModelError(f"{path}: pypmml could not load the PMML: {error}") from error
    if PROBABILITY_FIELD not in model.outputNames:
        raise ModelError(f"{path}: output field '{PROBABILITY_FIELD}' not found. Got {list(model.outputNames)}.")
    result = model.predict(pmml_input(features, feature_names))
    return result[PROBABILITY_FIELD].to_numpy(dtype=float)


def compare(
    p_native: np.ndarray,
    p_pmml: np.ndarray,
    threshold: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityResult:
    """Compare two score vectors (same rows, same order). Pure."""
    native = np.asarray(p_native, dtype=float)
    pmml = np.asarray(p_pmml, dtype=float)
    if native.shape != pmml.shape:
        raise ModelError(f"Cannot compare {native.shape[0]} native scores with {pmml.shape[0]} PMML scores.")
    missing = ~np.isfinite(pmml)
    diff = np.where(missing, 1.0, np.abs(native - np.where(missing, 0.0, pmml)))
    flips = int(np.sum(missing | ((native >= threshold) != (pmml >= threshold))))
    max_abs_diff = float(diff.max()) if diff.size else 0.0
    return ParityResult(
        max_abs_diff=max_abs_diff,
        flips=flips,
        n=int(native.size),
        passed=bool(native.size > 0 and max_abs_diff <= tolerance and flips == 0),
        tolerance=float(tolerance),
        threshold=float(threshold),
    )


def check_parity(
    pmml_path: Path | str,
    features: pd.DataFrame,
    p_native: np.ndarray,
    feature_names: Sequence[str],
    threshold: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityResult:
    """Score ``features`` with the PMML and compare with the native scores; never raises on a mismatch."""
    p_pmml = score_pmml(pmml_path, features, feature_names)
    result = compare(p_native, p_pmml, threshold, tolerance)
    logger.info(
        "parity path=%s n=%d max_abs_diff=%.3g flips=%d passed=%s",
        pmml_path,
        result.n,
        result.max_abs_diff,
        result.flips,
        result.passed,
    )
    return result


def require_parity(result: ParityResult) -> None:
    """Raise `ParityError` (exit code 3) with the numbers unless parity passed."""
    if not result.passed:
        raise ParityError(result.describe())
