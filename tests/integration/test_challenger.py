"""A champion and a challenger trained for real (quick grid), then compared with `abflow models compare`.

The challenger differs by seed, feature subset and name. Its PMML must take exactly its features, still score sessions
that carry every feature (the job sends all of them), pass the parity gate, and get its own model_version.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data import generator
from experiment.cli.main import app
from experiment.model.card import load_verified_model_card
from experiment.model.reference import PmmlReference, release_reference_engine
from experiment.model.scorer import build_verified_scorer
from tests.helpers.abflow_cli import run_abflow
from training.dataset import load_split

pytestmark = [pytest.mark.training, pytest.mark.slow]

CATEGORIES = 12
SUBSET = ("age", "woman", "man", "cat2", "cat4", "cat5", "cat6", "cat7")  # not the data's column order, on purpose


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    generator.write(generator.generate(customers=1500, categories=CATEGORIES, seed=7), directory)
    return directory


@pytest.fixture(scope="module")
def models(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    champion, challenger = root / "champion", root / "challenger"
    runs = [
        ["--out", str(champion), "--quick", "--name", "champion"],
        ["--out", str(challenger), "--grid", "quick", "--seed", "11", "--features", ",".join(SUBSET),
         "--name", "challenger"],
    ]  # fmt: skip
    for args in runs:
        result = CliRunner().invoke(app, ["train", "--data", str(data_dir), *args])
        assert result.exit_code == 0, result.output
    return champion, challenger


def test_the_challenger_card_pmml_and_report_carry_its_options(models: tuple[Path, Path]) -> None:
    champion, challenger = models
    card = json.loads((challenger / "model.json").read_text())
    assert card["features"] == list(SUBSET)
    assert card["name"] == "challenger" and card["random_state"] == 11
    assert card["cv"]["grid_name"] == "quick" and card["cv"]["folds"] == 3 and card["cv"]["quick"] is True
    assert card["data"]["n_features"] == 3 + CATEGORIES
    assert card["parity"]["passed"] is True and card["parity"]["max_abs_diff"] <= 1e-6
    xgb = card["metrics"]["xgboost"]
    assert 0.0 < xgb["log_loss"] < 0.69 and 0.0 < xgb["precision"] <= 1.0 and 0.0 < xgb["recall"] <= 1.0
    (_, fp), (fn, tp) = xgb["confusion_matrix"]
    assert xgb["precision"] == pytest.approx(tp / (tp + fp)) and xgb["recall"] == pytest.approx(tp / (tp + fn))

    verified = load_verified_model_card(challenger)
    assert verified.features == SUBSET and (verified.name, verified.seed, verified.grid) == ("challenger", 11, "quick")
    with PmmlReference(verified.pmml_path) as reference:  # what pypmml reads from the file itself
        assert reference.feature_names == SUBSET

    report = (challenger / "classification_report_xgboost.txt").read_text()
    assert "name: challenger\nseed: 11\ngrid: quick (3 folds)\n" in report
    assert f"features (8 of {3 + CATEGORIES}): {', '.join(SUBSET)}\n" in report

    old = json.loads((champion / "model.json").read_text())
    assert old["features"] == ["age", "man", "woman", *(f"cat{j}" for j in range(1, CATEGORIES + 1))]
    assert (old["name"], old["random_state"], old["cv"]["grid_name"]) == ("champion", 7, "quick")
    assert old["model_version"] != card["model_version"]


def test_the_subset_model_scores_sessions_that_carry_every_feature(models: tuple[Path, Path], data_dir: Path) -> None:
    _, challenger = models
    card = load_verified_model_card(challenger)
    x_test, _ = load_split(data_dir, "test")
    assert len(x_test.columns) == 3 + CATEGORIES  # every feature, in the data's order, as a session carries them
    p_native = pd.read_csv(challenger / "predictions_test.csv")["p_native"].to_numpy()
    try:
        scorer = build_verified_scorer(card.pmml_path, card.model_version, x_test)
        assert scorer.kind == "compiled" and scorer.feature_names == SUBSET
        p = scorer.score_batch(x_test)
        np.testing.assert_allclose(p, p_native, rtol=0, atol=1e-6)
        session = {name: float(value) for name, value in x_test.iloc[0].items()}
        assert scorer.score_one(session) == pytest.approx(p_native[0], abs=1e-6)
        changed = dict(session, cat1=session["cat1"] + 5, cat9=7.0)  # features the challenger does not use
        assert scorer.score_one(changed) == scorer.score_one(session)
    finally:
        release_reference_engine()


def test_models_compare_shows_both_models_side_by_side(models: tuple[Path, Path], tmp_path: Path) -> None:
    champion, challenger = models
    first, second = (load_verified_model_card(m) for m in models)
    assert first.model_version != second.model_version

    run = run_abflow("models", "compare", str(champion), str(challenger), cwd=tmp_path, env={})
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert f"[1] {champion}  (champion)  model_version {first.model_version}" in run.stdout
    assert f"[2] {challenger}  (challenger)  model_version {second.model_version}" in run.stdout
    rows = {line.split("  ")[0]: line.split() for line in run.stdout.splitlines() if line[:1].isalpha()}
    assert rows["seed"][1:] == ["7", "11"]
    assert rows["features"][1:] == ["15", "of", "15", "8", "of", "15"]
    auc = [f"{first.metrics['xgboost']['roc_auc']:.4f}", f"{second.metrics['xgboost']['roc_auc']:.4f}"]
    assert [cell for cell in rows["test ROC AUC"][3:] if cell != "*"] == auc  # "test ROC AUC v1 [*] v2 [*]"
    assert rows["test ROC AUC"][3:].count("*") >= 1  # one of them is marked best (same data, so ranked)

    run = run_abflow("models", "compare", str(champion), str(challenger), "--format", "json", cwd=tmp_path, env={})
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    got = [(m["name"], m["seed"], m["grid"], m["n_features"], m["model_version"]) for m in data["models"]]
    assert got == [
        ("champion", 7, "quick", 15, first.model_version),
        ("challenger", 11, "quick", 8, second.model_version),
    ]
    assert [m["test"]["log_loss"] for m in data["models"]] == [
        first.metrics["xgboost"]["log_loss"],
        second.metrics["xgboost"]["log_loss"],
    ]
    assert [m["parity_max_abs_diff"] for m in data["models"]] == [first.parity.max_abs_diff, second.parity.max_abs_diff]
    assert data["notes"] == [] and data["data"] is None


def test_models_compare_with_data_rescores_both_on_one_test_set(
    models: tuple[Path, Path], data_dir: Path, tmp_path: Path
) -> None:
    run = run_abflow("models", "compare", *map(str, models), "--data", str(data_dir), "--format", "json",
                     cwd=tmp_path, env={}, timeout_s=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["data"]["dir"] == str(data_dir)
    for model in data["models"]:
        fresh, card = model["fresh"], model["test"]
        assert fresh["n"] == 300  # 20 % of 1500
        # the same test set the card was evaluated on, scored through the verified PMML scorer: the same numbers
        for key in ("roc_auc", "log_loss", "accuracy", "precision", "recall"):
            assert fresh[key] == pytest.approx(card[key], abs=1e-4), key
    assert set(data["best"]) >= {"fresh.roc_auc", "fresh.log_loss"}


def test_models_compare_refuses_a_bogus_directory_with_one_line(models: tuple[Path, Path], tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model"
    bogus.mkdir()
    (bogus / "model.json").write_text("{not json", encoding="utf-8")
    run = run_abflow("models", "compare", str(models[0]), str(bogus), cwd=tmp_path, env={})
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bogus / 'model.json'}: not a readable model card")
