"""`abflow models compare` without training: the pure comparison, old and new model cards, and the CLI's refusals.

Model directories are hand-written (a real tiny PMML and its card), so nothing here starts pypmml or fits a model;
the trained, re-scored comparison is in tests/integration/test_challenger.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core.errors import ModelError
from experiment.model.card import load_model_card
from tests.helpers.model_dir import write_model_dir
from tests.helpers.tiny_pmml import tiny_pmml
from training.compare import (
    ModelSummary,
    compare,
    format_text,
    precision_recall,
    summarize,
    to_json,
)

FINGERPRINT = "a" * 64


def _summary(index: int, **changes: Any) -> ModelSummary:
    base = ModelSummary(
        directory=f"m{index}",
        model_version=f"{index:x}" * 64,
        name=None,
        seed=7,
        grid="quick",
        features=("age", "man", "woman"),
        n_data_features=5,
        threshold=0.5,
        data_fingerprint=FINGERPRINT,
        trained_at_ms=1_700_000_000_000,
        cv_roc_auc=0.80,
        test={"roc_auc": 0.80, "log_loss": 0.50, "accuracy": 0.75, "precision": 0.6, "recall": 0.5},
        parity_max_abs_diff=1e-7,
        parity_n=400,
    )
    return replace(base, **changes)


def _new_card(directory: Path, op: str = "lessThan", **fields: Any) -> str:
    """A model directory as today's training writes it (name, seed, grid name, log-loss...); returns its version."""
    write_model_dir(directory)
    pmml = directory / "xgboost_model.pmml"
    pmml.write_text(tiny_pmml(op), encoding="utf-8")
    version = hashlib.sha256(pmml.read_bytes()).hexdigest()
    card = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    card.update(
        model_version=version,
        name="champion",
        random_state=7,
        cv={"best_score": 0.81, "grid_name": "wide", "quick": False, "folds": 5},
        metrics={
            "xgboost": {
                "roc_auc": 0.83,
                "log_loss": 0.45,
                "accuracy": 0.79,
                "precision": 0.70,
                "recall": 0.60,
                "confusion_matrix": [[200, 30], [40, 130]],
            }
        },
        data={"fingerprint": FINGERPRINT, "n_features": 23},
        trained_at_ms=1_700_000_000_000,
    )
    card.update(fields)
    (directory / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return version


# ------------------------------------------------------------------ reading cards, old and new


def test_an_old_card_without_the_new_keys_still_loads_and_summarises(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "old")  # the card layout before --seed/--grid/--name existed
    card = load_model_card(tmp_path / "old")
    assert (card.name, card.seed, card.grid) == (None, None, None)
    summary = summarize(card, "old")
    assert summary.test == {"roc_auc": None, "log_loss": None, "accuracy": None, "precision": None, "recall": None}
    assert summary.features == ("a", "b") and summary.n_data_features is None and summary.trained_at_ms is None


@pytest.mark.parametrize(("cv", "grid"), [({"quick": True}, "quick"), ({"quick": False}, "default")])
def test_an_old_card_gets_its_grid_from_the_quick_flag(tmp_path: Path, cv: dict[str, Any], grid: str) -> None:
    _new_card(tmp_path / "m", cv={"best_score": 0.8, **cv}, random_state=3)
    card = load_model_card(tmp_path / "m")
    assert card.grid == grid and card.seed == 3


def test_precision_and_recall_come_from_the_confusion_matrix_when_the_card_lacks_them(tmp_path: Path) -> None:
    _new_card(tmp_path / "m", metrics={"xgboost": {"roc_auc": 0.8, "confusion_matrix": [[50, 10], [30, 90]]}})
    summary = summarize(load_model_card(tmp_path / "m"), "m")
    assert summary.test["precision"] == pytest.approx(90 / 100)
    assert summary.test["recall"] == pytest.approx(90 / 120)
    assert summary.test["log_loss"] is None and summary.test["roc_auc"] == 0.8


def test_precision_recall_with_no_positive_prediction_is_none() -> None:
    assert precision_recall([[10, 0], [5, 0]]) == (None, 0.0)
    assert precision_recall([[10, 2], [0, 0]]) == (0.0, None)


def test_a_new_card_carries_name_seed_grid_and_every_metric(tmp_path: Path) -> None:
    version = _new_card(tmp_path / "m", name="challenger", random_state=11)
    summary = summarize(load_model_card(tmp_path / "m"), "m")
    assert (summary.name, summary.seed, summary.grid, summary.model_version) == ("challenger", 11, "wide", version)
    assert summary.test == {"roc_auc": 0.83, "log_loss": 0.45, "accuracy": 0.79, "precision": 0.70, "recall": 0.60}
    assert summary.n_data_features == 23 and summary.cv_roc_auc == 0.81


# ------------------------------------------------------------------ the pure comparison


def test_best_marks_higher_auc_and_lower_log_loss_with_ties_all_marked() -> None:
    one = _summary(1, cv_roc_auc=0.82, test={"roc_auc": 0.80, "log_loss": 0.40})
    two = _summary(2, cv_roc_auc=0.82, test={"roc_auc": 0.85, "log_loss": 0.45})
    three = _summary(3, cv_roc_auc=0.79, test={"roc_auc": 0.84, "log_loss": None})
    result = compare([one, two, three])
    assert result.best == {"cv_roc_auc": (0, 1), "test.roc_auc": (1,), "test.log_loss": (0,)}
    assert result.notes == ()


def test_a_metric_only_one_model_has_is_not_ranked() -> None:
    one = _summary(1, test={"roc_auc": 0.8, "log_loss": 0.4})
    two = _summary(2, test={"roc_auc": 0.7, "log_loss": None})
    assert "test.log_loss" not in compare([one, two]).best


def test_different_training_data_ranks_only_fresh_metrics_and_says_why() -> None:
    one = _summary(1, fresh={"roc_auc": 0.70, "log_loss": 0.6})
    two = _summary(2, data_fingerprint="b" * 64, cv_roc_auc=0.99, fresh={"roc_auc": 0.75, "log_loss": 0.5})
    result = compare([one, two], data_dir="data", data_fingerprint=FINGERPRINT)
    assert result.best == {"fresh.roc_auc": (1,), "fresh.log_loss": (1,)}
    assert any("different data" in note and "--data" in note for note in result.notes)
    assert any(note.startswith("--data is not the data model(s) [2]") for note in result.notes)


def test_notes_name_the_same_model_twice_and_different_thresholds() -> None:
    one = _summary(1)
    same = _summary(2, model_version=one.model_version, directory="copy", threshold=0.4)
    notes = compare([one, same]).notes
    assert "[1] and [2] are the same model (same model_version)" in notes
    assert any(note.startswith("thresholds differ") for note in notes)


def test_fewer_than_two_models_is_refused() -> None:
    with pytest.raises(ModelError, match=r"at least two models\. Got 1\.$"):
        compare([_summary(1)])


def test_text_shows_every_model_side_by_side_with_best_marks() -> None:
    one = _summary(1, name="champion", seed=7, test={"roc_auc": 0.8123, "log_loss": 0.4})
    two = _summary(2, name="challenger", seed=11, grid="wide", features=("age",), test={"roc_auc": 0.8456})
    text = format_text(compare([one, two]))
    lines = text.splitlines()
    assert f"  [1] m1  (champion)  model_version {one.model_version}" in lines
    assert f"  [2] m2  (challenger)  model_version {two.model_version}" in lines
    rows = {line.split("  ")[0]: line.split() for line in lines if line and not line.startswith((" ", "*"))}
    assert rows["seed"][-2:] == ["7", "11"]
    assert rows["grid"][-2:] == ["quick", "wide"]
    assert rows["features"][-6:] == ["3", "of", "5", "1", "of", "5"]
    assert rows["test ROC AUC"][-3:] == ["0.8123", "0.8456", "*"]
    assert rows["test log-loss"][-3:] == ["log-loss", "0.4000", "-"]  # one value ranks nothing: no mark
    assert rows["trained at (UTC)"][-4:] == ["2023-11-14", "22:13:20Z", "2023-11-14", "22:13:20Z"]
    assert "fresh ROC AUC" not in rows  # no --data, no fresh rows


def test_json_holds_whole_versions_one_based_best_and_notes() -> None:
    one = _summary(1, test={"roc_auc": 0.8})
    two = _summary(2, test={"roc_auc": 0.9}, threshold=0.3)
    data = json.loads(json.dumps(to_json(compare([one, two]))))
    assert [m["model_version"] for m in data["models"]] == [one.model_version, two.model_version]
    assert data["models"][0]["n_features"] == 3 and data["models"][0]["features"] == ["age", "man", "woman"]
    assert data["models"][0]["trained_at"] == "2023-11-14 22:13:20Z"
    assert data["best"]["test.roc_auc"] == [2] and data["data"] is None
    assert data["notes"] == ["thresholds differ: accuracy, precision and recall are each at the model's own threshold"]


# ------------------------------------------------------------------ the CLI, offline


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["models", "compare", *args])


def test_cli_compares_two_verified_models(tmp_path: Path) -> None:
    first = _new_card(tmp_path / "champ", "lessThan", name="champion")
    second = _new_card(tmp_path / "chall", "lessOrEqual", name="challenger", random_state=11)
    assert first != second
    result = _cli(str(tmp_path / "champ"), str(tmp_path / "chall"))
    assert result.exit_code == 0, result.output
    assert first in result.stdout and second in result.stdout and "challenger" in result.stdout
    assert result.stderr == ""
    result = _cli(str(tmp_path / "champ"), str(tmp_path / "chall"), "--format", "json")
    assert result.exit_code == 0, result.output
    models = json.loads(result.stdout)["models"]
    assert [(m["name"], m["seed"], m["model_version"]) for m in models] == [
        ("champion", 7, first),
        ("challenger", 11, second),
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, "no such model directory."),
        (lambda d: d.mkdir(), "model card not found (run `abflow train` first)."),
        (lambda d: write_model_dir(d, parity_passed=False), "the PMML failed the parity gate"),
        (
            lambda d: (write_model_dir(d), (d / "xgboost_model.pmml").write_text(tiny_pmml("lessOrEqual"))),
            "the PMML was changed after training.",
        ),
    ],
    ids=["missing", "no-card", "parity-failed", "pmml-changed"],
)
def test_a_directory_that_is_not_a_verified_model_is_one_line_and_exit_2(
    tmp_path: Path, make: Any, message: str
) -> None:
    _new_card(tmp_path / "good")
    make(tmp_path / "bad")
    result = _cli(str(tmp_path / "good"), str(tmp_path / "bad"))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert str(tmp_path / "bad") in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: models compare needs at least two model directories. Got 0."),
        (("one",), "error: models compare needs at least two model directories. Got 1."),
        (("a", "b", "--format", "xml"), "error: --format must be one of text, json. Got 'xml'."),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = _cli(*args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
