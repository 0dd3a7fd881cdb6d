"""Fast, verified model scoring for the decision job: a compiled PMML evaluator proven equal to pypmml at load time.

Why: pypmml (our reference PMML engine) scores about 160 rows/s per record through its py4j gateway, far below the
job's needs. `flink_pipeline.pmml_compiler` compiles our exported PMML into a numpy batch scorer and a generated
per-record scorer. Speed is worthless if the answer differs, so `load_verified_scorer` only hands out the fast
path after it has (1) checked the file's sha256 against the experiment's `model_version` and (2) scored the
model's test set (or rows the caller passes) with both engines and found max |ΔP| ≤ 1e-9. Otherwise it refuses
with a `ModelError` that carries the numbers, or, when asked to, falls back to pypmml and says so at ERROR level.

The job calls `load_verified_scorer` in `open()`; a per-process cache makes each model version load and verify
once, however many operators or experiments share it. Scorers hold generated code or a JVM handle and are never
pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from experiment.core.errors import ModelError
from experiment.model.pmml_guard import check_pmml
from flink_pipeline.pmml_compiler import CompiledModel, ModelSpec, compile_pmml

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_PROBES",
    "DEFAULT_TOLERANCE",
    "ParityReport",
    "PmmlReference",
    "Scorer",
    "clear_scorer_cache",
    "load_verified_scorer",
    "probe_rows",
    "release_reference_engine",
    "sha256_of",
    "verify",
]

logger = logging.getLogger(__name__)

#: The largest |ΔP| between the fast path and pypmml that `load_verified_scorer` accepts (issue 5).
DEFAULT_TOLERANCE = 1e-9
#: Synthetic split-point rows added to every verification (about a second of pypmml time).
DEFAULT_PROBES = 1000

ScorerKind = Literal["compiled", "pypmml"]


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file: the `model_version` that experiments name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# The reference: pypmml
# --------------------------------------------------------------------------------------------------------------


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
        matrix = _feature_matrix(features, self.feature_names)
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


def _nan_if_null(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _feature_matrix(features: pd.DataFrame | np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(rows × names) float64; a DataFrame is matched by column name with absent columns as 0."""
    if isinstance(features, np.ndarray):
        matrix = np.asarray(features, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(names):
            raise ModelError(f"expected a (rows, {len(names)}) array, got shape {matrix.shape}")
        return matrix
    matrix = np.zeros((len(features), len(names)), dtype=np.float64)
    present = set(features.columns)
    for j, name in enumerate(names):
        if name in present:
            matrix[:, j] = np.asarray(features[name], dtype=np.float64)
    return matrix


# --------------------------------------------------------------------------------------------------------------
# The verified scorer
# --------------------------------------------------------------------------------------------------------------


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


class Scorer:
    """A verified model: `score_batch` and `score_one` return P(class = 1); absent features count as 0.

    `kind` says which engine answers: "compiled" (the fast path, proven equal to pypmml) or "pypmml" (the
    fallback, about 160 rows/s per record). `parity` holds the load-time comparison.
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


_cache: dict[tuple[str, str, bool, float, int], Scorer] = {}
_cache_lock = threading.Lock()


def release_reference_engine() -> None:
    """Stop pypmml's JVM gateway (a separate java process, a few hundred MB) once every model is verified.

    Optional: call it after the job's `open()`s when every scorer is `kind == "compiled"`; a pypmml fallback
    scorer (or a later verification) starts the gateway again when it needs it.
    """
    if any(s.kind == "pypmml" for s in _cache.values()):
        logger.warning("pypmml gateway kept: a fallback scorer still uses it")
        return
    from pypmml import Model

    Model.close()


def clear_scorer_cache() -> None:
    """Forget every loaded scorer (tests; a job never needs it)."""
    with _cache_lock:
        _cache.clear()


def load_verified_scorer(
    pmml_path: str | Path,
    model_version: str,
    reference_rows: pd.DataFrame | np.ndarray | str | Path | None = None,
    *,
    fallback: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    probes: int = DEFAULT_PROBES,
) -> Scorer:
    """Load the PMML once per process, prove the fast path equal to pypmml, and return the scorer.

    - The file must first pass `experiment.model.pmml_guard.check_pmml` (no DOCTYPE, entities or external references),
      else `ModelError` whatever `fallback` says: pypmml's parser would fetch what a DTD names.
    - `model_version` must equal the file's sha256 (hex), else `ModelError`: a job never scores with a model the
      experiment did not name.
    - `reference_rows`: the model's test set as a DataFrame/array, or a data directory holding `X_test.csv`
      (read with `training.dataset.load_split`), or a CSV file (indexed by customer_id). `probes` synthetic
      rows on and around the model's own split points (`probe_rows`) are always added: the test set alone
      cannot tell `<` from `<=` at a cut point (measured: a flipped operator passes all 4,000 test rows and
      fails every probe row), and with no test set at hand they are the whole check.
    - If the fast path cannot be compiled or differs by more than `tolerance` on any row, this raises
      `ModelError` with the numbers, or with `fallback=True` logs at ERROR and returns a pypmml scorer.

    Thread-safe; the first successful call for (path, version, fallback, tolerance) wins and later calls reuse it.
    """
    path = Path(pmml_path).resolve()
    key = (str(path), model_version.lower(), fallback, tolerance, probes)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        scorer = _load(
            path, model_version.lower(), reference_rows, fallback=fallback, tolerance=tolerance, probes=probes
        )
        _cache[key] = scorer
        return scorer


def _load(
    path: Path,
    model_version: str,
    reference_rows: pd.DataFrame | np.ndarray | str | Path | None,
    *,
    fallback: bool,
    tolerance: float,
    probes: int,
) -> Scorer:
    if not path.is_file():
        raise ModelError(f"PMML file {path} does not exist (model_version={model_version})")
    check_pmml(path)  # before any parser, and whatever `fallback` says: a refused file never reaches pypmml
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
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
        return Scorer(
            pmml_path=path,
            model_version=model_version,
            kind="pypmml",
            parity=None,
            compiled=None,
            reference=reference,
            feature_names=reference.feature_names,
        )

    rows, source = _reference_rows(reference_rows, compiled, probes)
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
    return Scorer(
        pmml_path=path,
        model_version=model_version,
        kind="pypmml",
        parity=parity,
        compiled=None,
        reference=reference,
        feature_names=reference.feature_names,
    )


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
    matrix = _feature_matrix(rows, compiled.feature_names)
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


def _reference_rows(
    rows: pd.DataFrame | np.ndarray | str | Path | None, compiled: CompiledModel, probes: int
) -> tuple[np.ndarray, str]:
    """The verification rows (in the model's feature order) and a description for logs and errors."""
    parts: list[np.ndarray] = []
    source = "no test set"
    if rows is None:
        logger.warning("no test set given; verifying on synthetic probe rows around every split point only")
    elif isinstance(rows, str | Path):
        where = Path(rows)
        if where.is_dir():
            frame, source = _load_test_set(where), f"test set {where / 'X_test.csv'}"
        elif where.is_file():
            import pandas as pd

            frame, source = pd.read_csv(where, index_col=0), f"file {where}"
        else:
            raise ModelError(f"reference rows {where} are neither a data directory nor a CSV file")
        parts.append(_feature_matrix(frame, compiled.feature_names))
    else:
        parts.append(_feature_matrix(rows, compiled.feature_names))
        source = "rows passed in"
    if probes > 0:
        parts.append(probe_rows(compiled.spec, n=probes))
    if not parts:
        raise ModelError("no rows to verify the scorer on: pass the test set or allow probe rows")
    n_given = len(parts[0]) if rows is not None else 0
    return np.vstack(parts), f"{n_given} {source} + {probes} probe rows"


def _load_test_set(data_dir: Path) -> pd.DataFrame:
    """The model's test set via the training code's validated loader (falls back to plain pandas)."""
    try:
        from training.dataset import load_split
    except ImportError:  # the job may ship without the training package
        import pandas as pd

        return pd.read_csv(data_dir / "X_test.csv", index_col=0)
    features, _labels = load_split(data_dir, "test")
    return features


def probe_rows(spec: ModelSpec, n: int = 2000, seed: int = 0) -> np.ndarray:
    """Synthetic rows (in `spec.input_fields` order) whose values sit on, just below and just above split points.

    Why: ties at cut points are exactly where a PMML engine and a fast path could disagree (issue 2's float32
    trap), and a random sample rarely hits them. For a split field defined as an affine function of one input
    (our StandardScaler fields), each value is the input that maps to a random cut point of that field, nudged
    by -2..+2 ulps; other inputs get small non-negative integers, like purchase counts.
    """
    rng = np.random.default_rng(seed)
    inputs = list(spec.input_fields)
    matrix = rng.integers(0, 4, size=(n, len(inputs))).astype(np.float64)
    derived = dict(spec.derived)
    cuts: dict[str, list[float]] = {}
    for tree in spec.trees:
        stack = [tree]
        while stack:
            node = stack.pop()
            if node.is_leaf:
                continue
            cuts.setdefault(node.field or "", []).append(node.threshold)
            stack += [node.first, node.second]  # type: ignore[list-item]
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


def _affine_inverse(field: str, derived: Mapping[str, Any]) -> tuple[str, Any] | None:
    """For `field = (x - a) / b` (or `x`), the input name and an approximate inverse; else None."""
    from flink_pipeline.pmml_compiler import ApplyExpr, ConstExpr, FieldExpr

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
