"""Train the model, export it to PMML, prove the PMML scores like the native model, write model.json.

Why this shape: the Flink job scores with the PMML file, so training is only done when that file is proven
equivalent to the evaluated pipeline (`training.parity`). Entry points: ``python training/train.py`` (the
seed's) and ``abflow train``; both call `train`.

Steps:

1. Load and validate the four CSVs (`training.dataset`); a bad file stops here, before anything is written.
2. ``GridSearchCV(Pipeline(StandardScaler, XGBClassifier(tree_method="hist")))``, ROC AUC, stratified K folds,
   on the chosen feature columns (all of them unless ``--features`` names a subset). The named grids (`GRIDS`):
   ``default`` is `FULL_GRID` (max_depth x n_estimators x learning_rate x min_child_weight, 32 candidates, 5 folds),
   ``quick`` (or ``--quick``) is `QUICK_GRID` (2 x 2, 3 folds) for tests, ``wide`` is `WIDE_GRID` (72 candidates,
   5 folds, with row subsampling, so the seed matters) for a challenger. Fits run on joblib's threading backend
   (XGBoost releases the GIL), so the per-fit progress callback runs in this process. ``random_state`` (``--seed``)
   everywhere: CV folds, XGBoost, the RandomForest.
3. Evaluate on the test set at the decision threshold: accuracy, ROC AUC, confusion matrix
   -> ``classification_report_xgboost.txt``; the same for a RandomForest baseline
   -> ``classification_report_randomforest.txt``.
4. Export the best pipeline with nyoka's ``xgboost_to_pmml``, correct it (`experiment.model.pmml_fix`)
   -> ``xgboost_model.pmml``; score the whole test set with pypmml and compare (`training.parity`).
5. ``predictions_test.csv`` (``customer_id``, ``p_native``) and ``model.json`` (`experiment.model.card`). A
   parity failure still writes model.json with ``parity.passed = false`` (launch refuses it), then raises
   `ParityError`.

A challenger differs from the champion only by these options (seed, grid, features, an optional name); each is
written into model.json and the XGBoost report so that ``abflow models compare`` can show them. ``model_version``
stays the sha256 of the PMML: the name is a label and never changes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiment.core.errors import AbflowError, ConfigError
from experiment.model import card as model_card
from experiment.model import pmml_fix
from experiment.model.digest import sha256_file
from experiment.model.pmml_guard import check_pmml
from training import dataset as dataset_module
from training import parity

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_GRID",
    "DEFAULT_OUT_DIR",
    "DEFAULT_SEED",
    "FILES",
    "FOLDS",
    "FULL_GRID",
    "GRIDS",
    "QUICK_GRID",
    "WIDE_GRID",
    "ProgressCallback",
    "TrainConfig",
    "TrainResult",
    "classification_metrics",
    "main",
    "parse_feature_list",
    "resolve_grid",
    "select_features",
    "summary_lines",
    "train",
    "train_with_progress",
    "validate_config",
]

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("data")
DEFAULT_OUT_DIR = Path("artifacts/model")
TARGET = "label"

FULL_GRID: dict[str, list[Any]] = {
    "xgb__max_depth": [2, 3, 4, 6],
    "xgb__n_estimators": [100, 300],
    "xgb__learning_rate": [0.05, 0.1],
    "xgb__min_child_weight": [1, 5],
}
"""The documented search space (docs/data-and-training.md): 32 candidates."""

QUICK_GRID: dict[str, list[Any]] = {
    "xgb__max_depth": [2, 3],
    "xgb__n_estimators": [30, 60],
}
"""``--quick``: a 2 x 2 grid (learning_rate stays at `_FIXED_XGB_PARAMS`'s 0.1) for tests and demos."""

WIDE_GRID: dict[str, list[Any]] = {
    "xgb__max_depth": [2, 3, 4],
    "xgb__n_estimators": [150, 300, 600],
    "xgb__learning_rate": [0.03, 0.1],
    "xgb__min_child_weight": [1, 5],
    "xgb__subsample": [0.8, 1.0],
}
"""``--grid wide``: 72 candidates for a challenger; row subsampling makes the seed change the trees themselves."""

GRIDS: dict[str, dict[str, list[Any]]] = {"quick": QUICK_GRID, "default": FULL_GRID, "wide": WIDE_GRID}
"""The named grids of ``--grid``; ``default`` is what ``abflow train`` has always used."""

FOLDS: dict[str, int] = {"quick": 3, "default": 5, "wide": 5}
"""Cross-validation folds per named grid (``--quick`` has always meant the quick grid with 3 folds)."""

DEFAULT_GRID = "default"
DEFAULT_SEED = 7
"""The seed of every model trained before ``--seed`` existed; keeping it keeps those models reproducible."""

MAX_NAME_LENGTH = 64

_FIXED_XGB_PARAMS: dict[str, Any] = {
    "tree_method": "hist",
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "learning_rate": 0.1,
    "n_jobs": 1,
}

FILES = {
    "pmml": "xgboost_model.pmml",
    "card": model_card.MODEL_CARD_NAME,
    "predictions": "predictions_test.csv",
    "report_xgboost": "classification_report_xgboost.txt",
    "report_randomforest": "classification_report_randomforest.txt",
}

ProgressCallback = Callable[[int, int], None]
"""Called as ``(fits_done, fits_total)`` after each cross-validation fit (from worker threads, serialised)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on.

    ``grid`` names one of `GRIDS`; ``None`` means ``quick`` when ``quick`` is set, else ``default`` (so callers
    that only know ``quick`` keep working). ``features`` is a subset of the data's feature columns, in the order
    the model takes them; ``None`` means all of them. ``name`` is a label for the model card only.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    out_dir: Path = DEFAULT_OUT_DIR
    quick: bool = False
    threshold: float = 0.5
    random_state: int = DEFAULT_SEED
    n_jobs: int = 2
    tolerance: float = parity.DEFAULT_TOLERANCE
    grid: str | None = None
    features: tuple[str, ...] | None = None
    name: str | None = None

    @property
    def grid_name(self) -> str:
        """The named grid this run searches (see `resolve_grid`)."""
        return resolve_grid(self.quick, self.grid)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced; ``files`` maps the keys of `FILES` to written paths."""

    best_params: dict[str, Any]
    cv_score: float
    metrics: dict[str, dict[str, Any]]
    parity: parity.ParityResult
    model_version: str
    files: dict[str, Path] = field(default_factory=dict)
    features: tuple[str, ...] = ()
    seed: int = DEFAULT_SEED
    grid: str = DEFAULT_GRID
    name: str | None = None


def resolve_grid(quick: bool, grid: str | None) -> str:
    """The grid name from ``--quick`` and ``--grid``: they may agree, never contradict. Raises `ConfigError`."""
    if grid is None:
        return "quick" if quick else DEFAULT_GRID
    if grid not in GRIDS:
        raise ConfigError(f"Unknown --grid {grid!r}; choose one of {', '.join(GRIDS)}.")
    if quick and grid != "quick":
        raise ConfigError(f"--quick means --grid quick, but --grid {grid} was given; use one of them.")
    return grid


def parse_feature_list(text: str) -> tuple[str, ...]:
    """``--features`` text (comma-separated names) as a tuple; empty items and duplicates are refused.

    Why here and not in the CLI: the script entry point and ``abflow train`` must accept the same lists.
    """
    names = tuple(part.strip() for part in text.split(","))
    if not text.strip() or any(not name for name in names):
        raise ConfigError(f"--features must be comma-separated feature names without empty items. Got {text!r}.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"--features names {', '.join(duplicates)} more than once.")
    return names


def select_features(available: tuple[str, ...], requested: tuple[str, ...] | None) -> list[str]:
    """The model's feature columns: all ``available`` ones, or ``requested`` (in its order) if every name exists.

    One error names every unknown feature at once, so a typo costs one run, not one per name.
    """
    if requested is None:
        return list(available)
    if not requested:
        raise ConfigError("--features must name at least one feature.")
    unknown = [name for name in requested if name not in available]
    if unknown:
        shown = ", ".join(available[:6]) + (f", ... ({len(available)} in all)" if len(available) > 6 else "")
        raise ConfigError(f"Unknown feature(s) in --features: {', '.join(unknown)}. The data has {shown}.")
    duplicates = sorted({name for name in requested if requested.count(name) > 1})
    if duplicates:
        raise ConfigError(f"--features names {', '.join(duplicates)} more than once.")
    return list(requested)


def validate_config(config: TrainConfig) -> None:
    """Refuse a bad option before any data is read or anything written (one `ConfigError` line each)."""
    if not 0.0 < config.threshold < 1.0:
        raise ConfigError(f"The decision threshold must be in (0, 1). Got {config.threshold}.")
    if not 0 <= config.random_state < 2**32:
        raise ConfigError(f"--seed must be an integer in [0, 2**32 - 1]. Got {config.random_state}.")
    resolve_grid(config.quick, config.grid)
    name = config.name
    if name is not None and (not name.strip() or len(name) > MAX_NAME_LENGTH or not name.isprintable()):
        raise ConfigError(f"--name must be 1 to {MAX_NAME_LENGTH} printable characters on one line. Got {name!r}.")


class _CountingScorer:
    """ROC AUC scorer that reports each finished fit; the threading backend keeps it in this process."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        from sklearn.metrics import get_scorer

        self._scorer = get_scorer("roc_auc")
        self._total = total
        self._callback = callback
        self._done = 0
        self._lock = threading.Lock()

    def __call__(self, estimator: Any, X: Any, y: Any) -> float:
        score = float(self._scorer(estimator, X, y))
        with self._lock:
            self._done += 1
            if self._callback is not None:
                self._callback(min(self._done, self._total), self._total)
        return score


def classification_metrics(y_true: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Test metrics of scores ``p`` at ``threshold``; public so `training.compare` re-scores with the same maths."""
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_score, recall_score, roc_auc_score

    predicted = (p >= threshold).astype(int)
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "roc_auc": float(roc_auc_score(y_true, p)),
        "log_loss": float(log_loss(y_true, p, labels=[0, 1])),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=[0, 1]).tolist(),
        "positive_rate_test": float(np.mean(y_true)),
        "threshold": float(threshold),
    }


def _report_text(title: str, y_true: np.ndarray, p: np.ndarray, metrics: dict[str, Any], extra: list[str]) -> str:
    from sklearn.metrics import classification_report

    predicted = (p >= metrics["threshold"]).astype(int)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    lines = [
        title,
        "=" * len(title),
        *extra,
        f"test rows: {len(y_true)}, decision threshold: {metrics['threshold']:g}",
        f"accuracy: {metrics['accuracy']:.4f}",
        f"ROC AUC:  {metrics['roc_auc']:.4f}",
        f"log-loss: {metrics['log_loss']:.4f}",
        "",
        "confusion matrix (rows = true label, columns = predicted):",
        "            pred 0   pred 1",
        f"  true 0  {tn:7d}  {fp:7d}",
        f"  true 1  {fn:7d}  {tp:7d}",
        "",
        classification_report(y_true, predicted, labels=[0, 1], digits=4, zero_division=0),
    ]
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    names = ("xgboost", "scikit-learn", "nyoka", "pypmml", "numpy", "pandas")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def _search(config: TrainConfig, x_train: pd.DataFrame, y_train: np.ndarray, progress: ProgressCallback | None) -> Any:
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV, ParameterGrid, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    grid = GRIDS[config.grid_name]
    folds = FOLDS[config.grid_name]
    pipeline = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("xgb", XGBClassifier(random_state=config.random_state, **_FIXED_XGB_PARAMS)),
        ]
    )
    total = len(ParameterGrid(grid)) * folds
    search = GridSearchCV(
        pipeline,
        grid,
        scoring=_CountingScorer(total, progress),
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.random_state),
        n_jobs=config.n_jobs,
        refit=True,
        error_score="raise",
    )
    logger.info("grid search candidates=%d folds=%d n_jobs=%d", total // folds, folds, config.n_jobs)
    with parallel_backend("threading", n_jobs=config.n_jobs):
        search.fit(x_train, y_train)
    return search


def _random_forest(config: TrainConfig, x_train: pd.DataFrame, y_train: np.ndarray, x_test: pd.DataFrame) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(
        n_estimators=100 if config.grid_name == "quick" else 300,
        min_samples_leaf=5,
        random_state=config.random_state,
        n_jobs=config.n_jobs,
    )
    forest.fit(x_train, y_train)
    return forest.predict_proba(x_test)[:, 1]


def _export_pmml(pipeline: Any, feature_names: list[str], out_dir: Path) -> tuple[Path, pmml_fix.FixReport]:
    from nyoka import xgboost_to_pmml

    raw_path = out_dir / ".xgboost_model.nyoka.pmml"
    try:
        xgboost_to_pmml(pipeline, feature_names, TARGET, str(raw_path))
        check_pmml(raw_path)
        fixed, report = pmml_fix.fix_pmml(raw_path.read_bytes(), pipeline, feature_names)
    finally:
        raw_path.unlink(missing_ok=True)
    path = out_dir / FILES["pmml"]
    path.write_bytes(fixed)
    return path, report


def _strip(params: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix("xgb__"): value for key, value in params.items()}


def train(config: TrainConfig, progress: ProgressCallback | None = None) -> TrainResult:
    """Run the whole job (module docstring); raises `ConfigError`, `DataValidationError` or `ParityError`."""
    validate_config(config)
    grid_name = config.grid_name
    started = time.monotonic()
    data = dataset_module.load_dataset(config.data_dir)
    features = select_features(data.feature_names, config.features)  # before anything is fitted or written
    x_train, x_test = data.X_train[features], data.X_test[features]
    y_train = data.y_train.to_numpy()
    search = _search(config, x_train, y_train, progress)
    best = search.best_estimator_
    p_native = best.predict_proba(x_test)[:, 1].astype(float)
    y_test = data.y_test.to_numpy()
    xgb_metrics = classification_metrics(y_test, p_native, config.threshold)
    p_forest = _random_forest(config, x_train, y_train, x_test)
    forest_metrics = classification_metrics(y_test, p_forest, config.threshold)

    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    best_params = _strip(search.best_params_)
    cv_score = float(search.best_score_)
    files: dict[str, Path] = {}
    files["report_xgboost"] = out / FILES["report_xgboost"]
    files["report_xgboost"].write_text(
        _report_text(
            "XGBoost (StandardScaler + XGBClassifier, best of GridSearchCV)",
            y_test,
            p_native,
            xgb_metrics,
            [
                f"name: {config.name or '-'}",
                f"seed: {config.random_state}",
                f"grid: {grid_name} ({search.n_splits_} folds)",
                f"features ({len(features)} of {len(data.feature_names)}): {', '.join(features)}",
                f"best parameters: {best_params}",
                f"cross-validated ROC AUC: {cv_score:.4f}",
            ],
        ),
        encoding="utf-8",
    )
    files["report_randomforest"] = out / FILES["report_randomforest"]
    files["report_randomforest"].write_text(
        _report_text("RandomForest baseline", y_test, p_forest, forest_metrics, []), encoding="utf-8"
    )
    files["predictions"] = out / FILES["predictions"]
    pd.DataFrame({"customer_id": data.X_test.index, "p_native": p_native}).to_csv(
        files["predictions"], index=False, float_format="%.17g", lineterminator="\n"
    )

    files["pmml"], fix_report = _export_pmml(best, features, out)
    result = parity.check_parity(files["pmml"], x_test, p_native, features, config.threshold, config.tolerance)
    model_version = sha256_file(files["pmml"])
    card = {
        "model_version": model_version,
        "name": config.name,
        "pmml_file": FILES["pmml"],
        "features": features,
        "target": TARGET,
        "threshold": config.threshold,
        "best_params": best_params,
        "cv": {
            "scoring": "roc_auc",
            "best_score": cv_score,
            "folds": search.n_splits_,
            "grid": {key.removeprefix("xgb__"): value for key, value in search.param_grid.items()},
            "grid_name": grid_name,
            "quick": grid_name == "quick",
        },
        "metrics": {"xgboost": xgb_metrics, "randomforest": forest_metrics},
        "data": {
            "fingerprint": data.fingerprint,
            "dir": str(config.data_dir),
            "n_train": len(data.X_train),
            "n_test": len(data.X_test),
            "n_features": len(data.feature_names),
        },
        "parity": result.to_dict() | {"engine": "pypmml"},
        "pmml_fix": {
            "base_score": fix_report.base_score,
            "intercept": fix_report.intercept,
            "thresholds_rewritten": fix_report.thresholds_rewritten,
            "constants_rewritten": fix_report.constants_rewritten,
            "output_fields_removed": fix_report.output_fields_removed,
        },
        "random_state": config.random_state,
        "versions": _versions(),
        "trained_at_ms": int(time.time() * 1000),
        "training_seconds": round(time.monotonic() - started, 1),
    }
    files["card"] = out / FILES["card"]
    files["card"].write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("trained model_version=%s out=%s parity_passed=%s", model_version, out, result.passed)
    parity.require_parity(result)
    return TrainResult(
        best_params=best_params,
        cv_score=cv_score,
        metrics={"xgboost": xgb_metrics, "randomforest": forest_metrics},
        parity=result,
        model_version=model_version,
        files=files,
        features=tuple(features),
        seed=config.random_state,
        grid=grid_name,
        name=config.name,
    )


def summary_lines(result: TrainResult) -> list[str]:
    """Human-readable summary for the entry points (they print; this module never does)."""
    xgb, forest = result.metrics["xgboost"], result.metrics["randomforest"]
    (tn, fp), (fn, tp) = xgb["confusion_matrix"]
    lines = [
        f"model: name {result.name or '-'}, seed {result.seed}, grid {result.grid}, {len(result.features)} features",
        f"best parameters: {result.best_params}",
        f"cross-validated ROC AUC: {result.cv_score:.4f}",
        f"test (XGBoost):      accuracy {xgb['accuracy']:.4f}  ROC AUC {xgb['roc_auc']:.4f}  "
        f"confusion [[TN {tn} FP {fp}] [FN {fn} TP {tp}]]",
        f"test (RandomForest): accuracy {forest['accuracy']:.4f}  ROC AUC {forest['roc_auc']:.4f}",
        result.parity.describe(),
        f"model_version {result.model_version}",
    ]
    lines += [f"wrote {path}" for path in result.files.values()]
    return lines


def train_with_progress(config: TrainConfig) -> TrainResult:
    """`train` with a Rich progress bar on stderr during the grid search (for entry points only)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("grid search (fits)", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            return train(config, progress=advance)
        except BaseException:
            # A failure is told by its one `error:` line; erase the bar (as `experiment.cli.common.erased_on_failure`
            # does) so that its last frame does not stand above it.
            bar.live.transient = True
            bar.live.stop()
            bar.disable = True
            raise


def _parse(argv: list[str] | None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python training/train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="directory with the four CSVs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="directory for the model artefacts")
    parser.add_argument("--quick", action="store_true", help="2x2 grid, 3 folds (tests, demos)")
    parser.add_argument("--threshold", type=float, default=0.5, help="decision threshold on P(label=1)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random_state for CV folds and models")
    parser.add_argument("--grid", choices=list(GRIDS), default=None, help="named grid (default: default)")
    parser.add_argument("--features", default=None, help="comma-separated subset of the feature columns")
    parser.add_argument("--name", default=None, help="label stored in model.json, e.g. challenger")
    args = parser.parse_args(argv)
    return TrainConfig(
        data_dir=args.data,
        out_dir=args.out,
        quick=args.quick,
        threshold=args.threshold,
        random_state=args.seed,
        grid=args.grid,
        features=None if args.features is None else parse_feature_list(args.features),
        name=args.name,
    )


def main(argv: list[str] | None = None) -> int:
    """The seed's entry point, ``python training/train.py``; same job and exit codes as ``abflow train``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = _parse(argv)
        result = train_with_progress(config)
    except AbflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
