"""Compare trained models offline: their model cards side by side, and optionally fresh scores on one test set.

Why: a challenger earns an experiment only if it is at least as good as the champion offline, and that is only
honest on the same test set. The cards already hold each model's test metrics; `compare` lines them up, marks the
best ranking metrics and says when the numbers are not comparable (different training data, different thresholds,
the same model twice). ``--data`` (`rescore`) scores every model on one test set with the scorer the job uses
(`experiment.model.scorer.build_verified_scorer`: the compiled PMML, proven equal to pypmml first) and computes the
metrics afresh.

Only verified models are compared (`load_verified_model_card`): a card whose parity failed or whose PMML bytes
changed is refused with a `ModelError`, since its numbers describe a model the job would never run.

Pure: `summarize`, `compare`, `format_text`, `to_json`. With side effects: `load_summaries`, `rescore`,
`compare_models`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiment.core.errors import ModelError
from experiment.model.card import ModelCard, load_verified_model_card

__all__ = [
    "RANKED",
    "Comparison",
    "ModelSummary",
    "compare",
    "compare_models",
    "format_text",
    "load_summaries",
    "precision_recall",
    "rescore",
    "summarize",
    "to_json",
]

logger = logging.getLogger(__name__)

METRIC_KEYS = ("roc_auc", "log_loss", "accuracy", "precision", "recall")
"""The per-test-set metrics a summary holds (None when an older card lacks one)."""

RANKED: dict[str, bool] = {
    "cv_roc_auc": True,
    "test.roc_auc": True,
    "test.log_loss": False,
    "fresh.roc_auc": True,
    "fresh.log_loss": False,
}
"""Metrics that get a "best" mark, and whether higher is better. Accuracy, precision and recall depend on each
model's threshold and trade off against each other, so they are shown but not ranked."""


@dataclass(frozen=True)
class ModelSummary:
    """What a comparison shows of one model; ``test`` from its card, ``fresh`` from `rescore` (None without it)."""

    directory: str
    model_version: str
    name: str | None
    seed: int | None
    grid: str | None
    features: tuple[str, ...]
    n_data_features: int | None
    threshold: float
    data_fingerprint: str
    trained_at_ms: int | None
    cv_roc_auc: float
    test: dict[str, float | None]
    parity_max_abs_diff: float
    parity_n: int
    fresh: dict[str, float | None] | None = None


@dataclass(frozen=True)
class Comparison:
    """Models in the order given; ``best`` maps a `RANKED` key to the indices of its best models (ties all)."""

    models: tuple[ModelSummary, ...]
    best: dict[str, tuple[int, ...]]
    notes: tuple[str, ...]
    data_dir: str | None = None
    data_fingerprint: str | None = None


def precision_recall(confusion: Sequence[Sequence[int]]) -> tuple[float | None, float | None]:
    """Precision and recall of class 1 from ``[[TN, FP], [FN, TP]]``; None where the denominator is 0.

    Why: cards written before precision and recall were stored still hold the confusion matrix.
    """
    (_, fp), (fn, tp) = confusion
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return precision, recall


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def summarize(card: ModelCard, directory: str) -> ModelSummary:
    """The comparable facts of one card; older cards (no log-loss, name, grid name) give None for what they lack."""
    xgb = dict(card.metrics.get("xgboost", {}))
    test: dict[str, float | None] = {key: _optional_float(xgb.get(key)) for key in METRIC_KEYS}
    if "confusion_matrix" in xgb and (test["precision"] is None or test["recall"] is None):
        precision, recall = precision_recall(xgb["confusion_matrix"])
        test["precision"] = test["precision"] if test["precision"] is not None else precision
        test["recall"] = test["recall"] if test["recall"] is not None else recall
    data = card.raw.get("data", {})
    n_data_features = data.get("n_features") if isinstance(data, dict) else None
    trained_at = card.raw.get("trained_at_ms")
    return ModelSummary(
        directory=directory,
        model_version=card.model_version,
        name=card.name,
        seed=card.seed,
        grid=card.grid,
        features=card.features,
        n_data_features=None if n_data_features is None else int(n_data_features),
        threshold=card.threshold,
        data_fingerprint=card.data_fingerprint,
        trained_at_ms=None if trained_at is None else int(trained_at),
        cv_roc_auc=card.cv_score,
        test=test,
        parity_max_abs_diff=card.parity.max_abs_diff,
        parity_n=card.parity.n,
    )


def _value(model: ModelSummary, key: str) -> float | None:
    if key == "cv_roc_auc":
        return model.cv_roc_auc
    group, metric = key.split(".")
    values = model.test if group == "test" else model.fresh
    return None if values is None else values.get(metric)


def _best(models: Sequence[ModelSummary], key: str, higher: bool) -> tuple[int, ...]:
    """Indices of the best value of ``key``; empty unless at least two models have one (one model beats nobody)."""
    values = [(i, v) for i, model in enumerate(models) if (v := _value(model, key)) is not None]
    if len(values) < 2:
        return ()
    target = max(v for _, v in values) if higher else min(v for _, v in values)
    return tuple(i for i, v in values if v == target)


def compare(
    models: Sequence[ModelSummary], *, data_dir: str | None = None, data_fingerprint: str | None = None
) -> Comparison:
    """Line the models up, mark the best ranking metrics and note what makes numbers incomparable. Pure.

    The card's metrics (CV and test) are ranked only when every model was trained on the same data: otherwise
    they come from different test sets, and only fresh metrics (``--data``) say which model is better.
    """
    if len(models) < 2:
        raise ModelError(f"A comparison needs at least two models. Got {len(models)}.")
    notes: list[str] = []
    same_data = len({m.data_fingerprint for m in models}) == 1
    if not same_data:
        notes.append(
            "the models were trained on different data (fingerprints differ): their CV and test metrics come from "
            "different test sets and are not ranked; use --data DIR to score them all on one"
        )
    seen: dict[str, int] = {}
    for i, model in enumerate(models):
        if model.model_version in seen:
            notes.append(f"[{seen[model.model_version] + 1}] and [{i + 1}] are the same model (same model_version)")
        else:
            seen[model.model_version] = i
    if len({m.threshold for m in models}) > 1:
        notes.append("thresholds differ: accuracy, precision and recall are each at the model's own threshold")
    if data_fingerprint is not None:
        other = [str(i + 1) for i, m in enumerate(models) if m.data_fingerprint != data_fingerprint]
        if other:
            notes.append(
                f"--data is not the data model(s) [{'], ['.join(other)}] were trained on: if its test rows were in "
                "their training set, their fresh metrics are optimistic"
            )
    best = {key: _best(models, key, higher) for key, higher in RANKED.items() if same_data or key.startswith("fresh.")}
    return Comparison(
        models=tuple(models),
        best={key: indices for key, indices in best.items() if indices},
        notes=tuple(notes),
        data_dir=data_dir,
        data_fingerprint=data_fingerprint,
    )


def _trained_at(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rows(comparison: Comparison) -> list[tuple[str, str | None, list[str]]]:
    """(label, RANKED key or None, one cell per model) for the text table."""
    models = comparison.models

    def cells(get: Any) -> list[str]:
        return [get(m) for m in models]

    def features(m: ModelSummary) -> str:
        return f"{len(m.features)}" if m.n_data_features is None else f"{len(m.features)} of {m.n_data_features}"

    rows: list[tuple[str, str | None, list[str]]] = [
        ("name", None, cells(lambda m: m.name or "-")),
        ("model_version", None, cells(lambda m: m.model_version[:16])),
        ("seed", None, cells(lambda m: "-" if m.seed is None else str(m.seed))),
        ("grid", None, cells(lambda m: m.grid or "-")),
        ("features", None, cells(features)),
        ("threshold", None, cells(lambda m: f"{m.threshold:g}")),
        ("trained at (UTC)", None, cells(lambda m: _trained_at(m.trained_at_ms) or "-")),
        ("data fingerprint", None, cells(lambda m: m.data_fingerprint[:16])),
        ("CV ROC AUC", "cv_roc_auc", cells(lambda m: f"{m.cv_roc_auc:.4f}")),
    ]
    labels = {
        "roc_auc": "ROC AUC",
        "log_loss": "log-loss",
        "accuracy": "accuracy",
        "precision": "precision",
        "recall": "recall",
    }
    for key, label in labels.items():
        rows.append((f"test {label}", f"test.{key}", cells(lambda m, k=key: _number(m.test.get(k), ".4f"))))
    rows.append(("parity max |dP|", None, cells(lambda m: f"{m.parity_max_abs_diff:.2g}")))
    rows.append(("parity rows", None, cells(lambda m: str(m.parity_n))))
    if any(m.fresh is not None for m in models):
        for key, label in labels.items():
            rows.append(
                (
                    f"fresh {label}",
                    f"fresh.{key}",
                    cells(lambda m, k=key: "-" if m.fresh is None else _number(m.fresh.get(k), ".4f")),
                )
            )
        rows.append(("fresh rows", None, cells(lambda m: "-" if m.fresh is None else _number(m.fresh.get("n"), ".0f"))))
    return rows


def format_text(comparison: Comparison) -> str:
    """The side-by-side table: one column per model, ``*`` on the best ranking metric, then notes."""
    lines = ["models:"]
    for i, model in enumerate(comparison.models):
        label = f"  ({model.name})" if model.name else ""
        lines.append(f"  [{i + 1}] {model.directory}{label}  model_version {model.model_version}")
    if comparison.data_dir is not None:
        lines.append(f"fresh metrics: every model scored on the test set of {comparison.data_dir}")
    lines.append("")
    rows = _rows(comparison)
    marked: list[tuple[str, list[str]]] = []
    for label, key, values in rows:
        best = comparison.best.get(key, ()) if key else ()
        marked.append((label, [f"{v} *" if i in best else v for i, v in enumerate(values)]))
    label_width = max(len(label) for label, _ in marked)
    widths = [max(len(f"[{i + 1}]"), *(len(values[i]) for _, values in marked)) for i in range(len(comparison.models))]
    header = " " * label_width + "".join(f"  {f'[{i + 1}]':<{w}}" for i, w in enumerate(widths))
    lines.append(header.rstrip())
    for label, values in marked:
        lines.append(
            (f"{label:<{label_width}}" + "".join(f"  {v:<{w}}" for v, w in zip(values, widths, strict=True))).rstrip()
        )
    if comparison.best:
        lines += ["", "* best of the compared models (ROC AUC: higher, log-loss: lower)"]
    if comparison.notes:
        lines += ["", "notes:", *(f"- {note}" for note in comparison.notes)]
    return "\n".join(lines)


def to_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as JSON-ready data: every model in full (whole versions, feature lists), best, notes.

    ``best`` lists 1-based model numbers, the ``[1]``, ``[2]`` of the text table.
    """
    models = []
    for model in comparison.models:
        entry = asdict(model)
        entry["features"] = list(model.features)
        entry["n_features"] = len(model.features)
        entry["trained_at"] = _trained_at(model.trained_at_ms)
        models.append(entry)
    return {
        "models": models,
        "best": {key: [i + 1 for i in indices] for key, indices in comparison.best.items()},
        "notes": list(comparison.notes),
        "data": None
        if comparison.data_dir is None
        else {"dir": comparison.data_dir, "fingerprint": comparison.data_fingerprint},
    }


def load_summaries(directories: Sequence[Path | str]) -> list[tuple[ModelCard, ModelSummary]]:
    """Each directory's verified card and its summary; the first unverified one raises `ModelError`."""
    loaded = []
    for directory in directories:
        if not Path(directory).exists():
            raise ModelError(f"{directory}: no such model directory.")
        card = load_verified_model_card(directory)
        loaded.append((card, summarize(card, str(directory))))
    return loaded


def rescore(
    loaded: Sequence[tuple[ModelCard, ModelSummary]], data_dir: Path | str
) -> tuple[list[ModelSummary], str | None]:
    """Score every model on ``data_dir``'s test set with the job's verified scorer; fresh metrics per model.

    Each scorer gets the whole test set, every feature column, as a session would carry them; a subset model picks
    its own columns by name. A model that needs a column the test set lacks is refused (`ModelError`): scoring it
    with zeros would make its metrics silently wrong. Returns the summaries with ``fresh`` set and the data's
    fingerprint (None when the directory lacks the training files).
    """
    from experiment.model.reference import release_reference_engine
    from experiment.model.scorer import build_verified_scorer
    from training.dataset import data_fingerprint, load_split
    from training.train import classification_metrics

    data_dir = Path(data_dir)
    x_test, y_test = load_split(data_dir, "test")
    try:
        fingerprint: str | None = data_fingerprint(data_dir)
    except OSError:
        fingerprint = None
    y = y_test.to_numpy()
    columns = set(x_test.columns)
    out = []
    try:
        for card, summary in loaded:
            missing = [name for name in card.features if name not in columns]
            if missing:
                raise ModelError(
                    f"{data_dir / 'X_test.csv'} lacks feature(s) {', '.join(missing)} that {summary.directory} uses."
                )
            scorer = build_verified_scorer(card.pmml_path, card.model_version, x_test)
            p = scorer.score_batch(x_test)
            metrics = classification_metrics(y, p, card.threshold)
            fresh: dict[str, float | None] = {key: float(metrics[key]) for key in METRIC_KEYS}
            fresh["n"] = float(len(y))
            logger.info("rescored model_version=%s rows=%d roc_auc=%.4f", card.model_version, len(y), fresh["roc_auc"])
            out.append(replace(summary, fresh=fresh))
    finally:
        release_reference_engine()
    return out, fingerprint


def compare_models(directories: Sequence[Path | str], data_dir: Path | str | None = None) -> Comparison:
    """`abflow models compare`: load and verify every card, re-score on ``data_dir`` if given, then `compare`."""
    if len(directories) < 2:
        raise ModelError(f"Give at least two model directories to compare. Got {len(directories)}.")
    loaded = load_summaries(directories)
    if data_dir is None:
        return compare([summary for _, summary in loaded])
    summaries, fingerprint = rescore(loaded, data_dir)
    return compare(summaries, data_dir=str(data_dir), data_fingerprint=fingerprint)
