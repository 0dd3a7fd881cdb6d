"""The job's door to a model: one verified scorer per model version per process, its reference rows read here.

Why a job-side layer: the model code (`experiment.model`) compiles a PMML and proves it equal to pypmml on rows it is
given, and never reads data files nor keeps state. The job knows where the model's test set lives (a data directory
or a CSV file, from its configuration), reads it with `experiment.model.rows` and passes the rows in; and several
operators or experiments in one process share a model version, so `load_verified_scorer` caches each scorer and
loads and verifies it once. Scorers hold generated code or a JVM handle and are never pickled: load them in `open()`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from experiment.model.reference import release_reference_engine as _stop_reference_engine
from experiment.model.rows import ReferenceRows, read_reference_rows
from experiment.model.scorer import Scorer, build_verified_scorer
from experiment.model.verify import DEFAULT_PROBES, DEFAULT_TOLERANCE

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["clear_scorer_cache", "load_verified_scorer", "release_reference_engine"]

logger = logging.getLogger(__name__)

_cache: dict[tuple[str, str, bool, float, int], Scorer] = {}
_cache_lock = threading.Lock()


def load_verified_scorer(
    pmml_path: str | Path,
    model_version: str,
    reference_rows: pd.DataFrame | np.ndarray | ReferenceRows | str | Path | None = None,
    *,
    fallback: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    probes: int = DEFAULT_PROBES,
) -> Scorer:
    """Load the PMML once per process, prove the fast path equal to pypmml, and return the scorer.

    `reference_rows` is the model's test set: rows (a DataFrame by column name, an array in feature order, or
    `ReferenceRows`), or where to read them (a data directory holding ``X_test.csv``, or a CSV file whose first
    column is the row id); a path is read only when the version is not cached yet. Everything else, the XML gate,
    the sha256 check against `model_version`, the probe rows, the tolerance and the refusal or pypmml fallback, is
    `experiment.model.scorer.build_verified_scorer`.

    Thread-safe; the first successful call for (path, version, fallback, tolerance, probes) wins and later calls
    reuse it.
    """
    path = Path(pmml_path).resolve()
    key = (str(path), model_version.lower(), fallback, tolerance, probes)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        rows = read_reference_rows(reference_rows) if isinstance(reference_rows, str | Path) else reference_rows
        scorer = build_verified_scorer(path, model_version, rows, fallback=fallback, tolerance=tolerance, probes=probes)
        _cache[key] = scorer
        return scorer


def release_reference_engine() -> None:
    """Stop pypmml's JVM gateway (a separate java process, a few hundred MB) once every model is verified.

    Optional: call it after the job's `open()`s when every scorer is `kind == "compiled"`; a pypmml fallback
    scorer (or a later verification) starts the gateway again when it needs it.
    """
    if any(s.kind == "pypmml" for s in _cache.values()):
        logger.warning("pypmml gateway kept: a fallback scorer still uses it")
        return
    _stop_reference_engine()


def clear_scorer_cache() -> None:
    """Forget every loaded scorer (tests; a job never needs it)."""
    with _cache_lock:
        _cache.clear()
