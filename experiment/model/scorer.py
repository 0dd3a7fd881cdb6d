"""A verified scorer: the compiled model, handed out only after it was proven equal to pypmml on this very file.

Why: speed is worthless if the answer differs. `build_verified_scorer` (1) passes the file through the XML gate,
(2) checks its sha256 against the experiment's `model_version`, (3) compiles it and (4) scores the reference rows
the caller passes, plus synthetic probe rows, with both engines, accepting max |ΔP| ≤ tolerance. Otherwise it
refuses with a `ModelError` that carries the numbers, or, when asked to, falls back to pypmml and says so at ERROR
level. It reads no data files and keeps no cache: the job side (`flink_pipeline.scoring`) reads the rows and loads
each model version once per process.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from experiment.core.errors import ModelError
from experiment.model.batch import feature_matrix
from experiment.model.compiled import CompiledModel, compile_pmml
from experiment.model.pmml_guard import check_pmml
from experiment.model.reference import PmmlReference
from experiment.model.rows import ReferenceRows
from experiment.model.verify import DEFAULT_PROBES, DEFAULT_TOLERANCE, ParityReport, probe_rows, verify

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Scorer", "ScorerKind", "build_verified_scorer"]

logger = logging.getLogger(__name__)

ScorerKind = Literal["compiled", "pypmml"]


class Scorer:
    """A verified model: `score_batch` and `score_one` return P(class = 1); absent features count as 0.

    `kind` says which engine answers: "compiled" (the fast path, proven equal to pypmml) or "pypmml" (the
    fallback, one py4j round trip per record). `parity` holds the load-time comparison.
    """

    def __init__(
        self,
        *,
        pmml_path: Path,
        model_version: str,
        kind: ScorerKind,
        parity: ParityReport | None,
        compiled: CompiledModel | None,
        reference: PmmlReference | None,
        feature_names: tuple[str, ...],
    ) -> None:
        self.pmml_path = pmml_path
        self.model_version = model_version
        self.kind: ScorerKind = kind
        self.parity = parity
        self.feature_names = feature_names
        self._compiled = compiled
        self._reference = reference
        if compiled is not None and kind == "compiled":
            self.score_batch = compiled.score_batch  # type: ignore[method-assign]
            self.score_one = compiled.score_one  # type: ignore[method-assign]

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Scorer holds generated code or a JVM handle and is never pickled: load it in open()")

    def __repr__(self) -> str:
        return f"Scorer(kind={self.kind!r}, model_version={self.model_version[:12]}..., path={self.pmml_path})"

    def score_batch(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """P(class = 1) per row (array in `feature_names` order, or a DataFrame by column name)."""
        assert self._reference is not None
        return self._reference.predict(features)

    def score_one(self, features: Mapping[str, float]) -> float:
        """P(class = 1) for one record."""
        assert self._reference is not None
        return self._reference.predict_one(features)


def build_verified_scorer(
    pmml_path: str | Path,
    model_version: str,
    reference_rows: ReferenceRows | pd.DataFrame | np.ndarray | None = None,
    *,
    fallback: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    probes: int = DEFAULT_PROBES,
) -> Scorer:
    """Gate, hash-check, compile and verify one PMML file; return its scorer (see the module docstring).

    - The file must first pass `experiment.model.pmml_guard.check_pmml` (no DOCTYPE, entities or external references),
      else `ModelError` whatever `fallback` says: pypmml's parser would fetch what a DTD names.
    - `model_version` must equal the file's sha256 (hex, any case), else `ModelError`: a job never scores with a model
      the experiment did not name.
    - `reference_rows`: the model's test set, as rows read from a CSV (`experiment.model.rows`), a DataFrame (by
      column name) or an array (in the model's feature order). `probes` synthetic rows on and around the model's own
      split points (`probe_rows`) are always added: the test set alone cannot tell `<` from `<=` at a cut point (a
      flipped operator can pass every test row and fail the probes), and with no test set they are the whole check.
    - If the fast path cannot be compiled or differs by more than `tolerance` on any row, this raises
      `ModelError` with the numbers, or with `fallback=True` logs at ERROR and returns a pypmml scorer.
    """
    path = Path(pmml_path).resolve()
    model_version = model_version.lower()
    if not path.is_file():
        raise ModelError(f"PMML file {path} does not exist (model_version={model_version})")
    check_pmml(path)  # before any parser, and whatever `fallback` says: a refused file never reaches pypmml
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()  # of the very bytes compiled below, not of a second read
    if actual != model_version:
        raise ModelError(
            f"PMML {path} has sha256 {actual}, but the experiment names model_version {model_version}: "
            "refusing to score with a different model"
        )
    started = time.perf_counter()
    try:
        compiled = compile_pmml(data, source=str(path))
        compile_error: ModelError | None = None
    except ModelError as exc:
        compiled, compile_error = None, exc
    compile_seconds = time.perf_counter() - started

    reference = PmmlReference(path).open()
    if compiled is None:
        assert compile_error is not None
        if not fallback:
            raise ModelError(f"cannot compile a fast scorer for {path}: {compile_error}") from compile_error
        logger.error(
            "scoring FALLBACK to pypmml (slow) model_version=%s path=%s reason=%s",
            model_version,
            path,
            compile_error,
        )
        return _pypmml_scorer(path, model_version, reference, parity=None)

    rows, source = _verification_rows(reference_rows, compiled, probes)
    parity = verify(compiled, reference, rows, source=source, tolerance=tolerance)
    if parity.passed:
        logger.info(
            "scorer verified kind=compiled model_version=%s rows=%d source=%s max_abs_diff=%.3g "
            "compile_s=%.3f pypmml_s=%.3f compiled_s=%.4f",
            model_version,
            parity.rows,
            source,
            parity.max_abs_diff,
            compile_seconds,
            parity.reference_seconds,
            parity.compiled_seconds,
        )
        reference.close()
        return Scorer(
            pmml_path=path,
            model_version=model_version,
            kind="compiled",
            parity=parity,
            compiled=compiled,
            reference=None,
            feature_names=compiled.feature_names,
        )
    message = (
        f"the compiled scorer for {path} (model_version={model_version}) differs from pypmml: "
        f"max |dP| = {parity.max_abs_diff:.3g} > tolerance {tolerance:g} on {parity.rows_over_tolerance} of "
        f"{parity.rows} rows ({source}; worst row {parity.worst_row})"
    )
    if not fallback:
        reference.close()
        raise ModelError(message)
    logger.error("scoring FALLBACK to pypmml (slow): %s", message)
    return _pypmml_scorer(path, model_version, reference, parity=parity)


def _pypmml_scorer(path: Path, model_version: str, reference: PmmlReference, *, parity: ParityReport | None) -> Scorer:
    return Scorer(
        pmml_path=path,
        model_version=model_version,
        kind="pypmml",
        parity=parity,
        compiled=None,
        reference=reference,
        feature_names=reference.feature_names,
    )


def _verification_rows(
    rows: ReferenceRows | pd.DataFrame | np.ndarray | None, compiled: CompiledModel, probes: int
) -> tuple[np.ndarray, str]:
    """The verification rows (in the model's feature order) and a description for logs and errors."""
    parts: list[np.ndarray] = []
    source = "no test set"
    if rows is None:
        logger.warning("no test set given; verifying on synthetic probe rows around every split point only")
    elif isinstance(rows, ReferenceRows):
        parts.append(rows.matrix(compiled.feature_names))
        source = rows.source
    else:
        parts.append(feature_matrix(rows, compiled.feature_names))
        source = "rows passed in"
    if probes > 0:
        parts.append(probe_rows(compiled.spec, n=probes))
    if not parts:
        raise ModelError("no rows to verify the scorer on: pass the test set or allow probe rows")
    n_given = len(parts[0]) if rows is not None else 0
    return np.vstack(parts), f"{n_given} {source} + {probes} probe rows"
