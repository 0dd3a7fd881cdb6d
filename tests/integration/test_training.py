"""Quick training end to end on small data, and the parity gate on the real pypmml engine (no mocks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data import generator
from experiment.cli.main import app
from experiment.core.errors import ModelError
from experiment.model import pmml_fix
from experiment.model.card import load_model_card, load_verified_model_card
from experiment.model.digest import sha256_file
from training import parity
from training.dataset import data_fingerprint, load_split
from training.train import FILES

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.training, pytest.mark.slow]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    generator.write(generator.generate(customers=2000, categories=20, seed=7), directory)
    return directory


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    result = CliRunner().invoke(app, ["train", "--data", str(small_data), "--out", str(out), "--quick"])
    return out, result


def test_quick_training_writes_every_artefact(trained, small_data):
    out, result = trained
    assert result.exit_code == 0, result.output
    assert "best parameters: {'max_depth':" in result.output
    assert "cross-validated ROC AUC: 0." in result.output
    assert "PMML parity passed on 400 rows" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())

    card = json.loads((out / "model.json").read_text())
    assert card["model_version"] == sha256_file(out / "xgboost_model.pmml")
    assert card["features"] == ["age", "man", "woman", *[f"cat{j}" for j in range(1, 21)]]
    assert card["threshold"] == 0.5
    assert set(card["best_params"]) == {"max_depth", "n_estimators"}
    assert card["cv"]["grid"] == {"max_depth": [2, 3], "n_estimators": [30, 60]}  # the 2x2 quick grid
    assert card["data"]["fingerprint"] == data_fingerprint(small_data)
    xgb = card["metrics"]["xgboost"]
    assert xgb["roc_auc"] > 0.75
    assert sum(map(sum, xgb["confusion_matrix"])) == 400
    assert card["metrics"]["randomforest"]["roc_auc"] > 0.7
    assert card["parity"]["passed"] is True and card["parity"]["flips"] == 0 and card["parity"]["n"] == 400
    assert card["parity"]["max_abs_diff"] <= 1e-6
    assert card["pmml_fix"]["output_fields_removed"] == 3

    report = (out / "classification_report_xgboost.txt").read_text()
    assert "ROC AUC:" in report and "confusion matrix" in report and "best parameters" in report
    assert "RandomForest" in (out / "classification_report_randomforest.txt").read_text()


def test_predictions_file_lets_anyone_recheck_parity(trained, small_data):
    out, _ = trained
    predictions = pd.read_csv(out / "predictions_test.csv")
    x_test, _ = load_split(small_data, "test")
    assert list(predictions.columns) == ["customer_id", "p_native"]
    assert predictions["customer_id"].tolist() == x_test.index.tolist()
    card = load_verified_model_card(out)
    p_pmml = parity.score_pmml(card.pmml_path, x_test, card.features)
    result = parity.compare(predictions["p_native"].to_numpy(), p_pmml, card.threshold)
    assert result.passed, result.describe()


def test_scorer_fills_absent_categories_with_zero(trained, small_data):
    out, _ = trained
    card = load_model_card(out)
    x_test, _ = load_split(small_data, "test")
    full = parity.score_pmml(card.pmml_path, x_test, card.features)
    never_bought = [c for c in x_test.columns if c.startswith("cat") and (x_test[c] == 0).all()]
    sparse = x_test.drop(columns=[*never_bought, "cat20"])
    sparse_scores = parity.score_pmml(card.pmml_path, sparse.assign(cat20=np.nan), card.features)
    assert np.isfinite(sparse_scores).all()
    expected = parity.score_pmml(card.pmml_path, x_test.assign(cat20=0), card.features)
    np.testing.assert_array_equal(sparse_scores, expected)
    assert np.isfinite(full).all()


def test_model_card_detects_a_tampered_pmml(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "model"
    copy.mkdir()
    for name in FILES.values():
        (copy / name).write_bytes((out / name).read_bytes())
    load_verified_model_card(copy)
    pmml = copy / "xgboost_model.pmml"
    pmml.write_bytes(pmml.read_bytes().replace(b"</PMML>", b"<!-- edited --></PMML>"))
    with pytest.raises(ModelError, match=r"sha256 is .* but .* says model_version"):
        load_verified_model_card(copy)


def test_parity_failure_exits_3_with_the_numbers_and_is_refused(small_data, tmp_path):
    out = tmp_path / "model"
    args = ["train", "--data", str(small_data), "--out", str(out), "--quick", "--parity-tolerance", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "error: PMML parity FAILED on 400 rows: max |dP| = " in result.output
    assert "(tolerance 0), 0 decision flips at threshold 0.5" in result.output
    card = load_model_card(out)
    assert card.parity.passed is False and card.parity.max_abs_diff > 0
    with pytest.raises(ModelError, match="failed the parity gate"):
        card.verify()


def _raw_export(small_data, tmp_path):
    from nyoka import xgboost_to_pmml
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    x_train, y_train = load_split(small_data, "train")
    x_test, _ = load_split(small_data, "test")
    features = list(x_train.columns)
    pipeline = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("xgb", XGBClassifier(n_estimators=60, max_depth=3, tree_method="hist", random_state=0, n_jobs=1)),
        ]
    )
    pipeline.fit(x_train, y_train)
    raw = tmp_path / "raw.pmml"
    xgboost_to_pmml(pipeline, features, "label", str(raw))
    p_native = pipeline.predict_proba(x_test)[:, 1]
    return pipeline, features, raw.read_bytes(), x_test, p_native


def _score(root, tmp_path, name, x_test, features, p_native):
    path = tmp_path / name
    path.write_bytes(pmml_fix.serialize_pmml(root))
    return parity.compare(p_native, parity.score_pmml(path, x_test, features), 0.5)


def test_each_cause_breaks_parity_on_pypmml_and_the_full_fix_restores_it(small_data, tmp_path):
    pipeline, features, raw, x_test, p_native = _raw_export(small_data, tmp_path)
    booster = pipeline[-1].get_booster()
    scaler = pipeline[0]

    unfixed = _score(pmml_fix.parse_pmml(raw), tmp_path, "raw.pmml", x_test, features, p_native)
    assert not unfixed.passed and unfixed.max_abs_diff > 0.01  # nyoka's export as is

    no_intercept = pmml_fix.parse_pmml(raw)  # cause 1 left in
    pmml_fix.fix_thresholds(no_intercept, booster, features, scaler.mean_, scaler.scale_)
    pmml_fix.fix_outputs(no_intercept)
    result = _score(no_intercept, tmp_path, "no_intercept.pmml", x_test, features, p_native)
    assert not result.passed and result.max_abs_diff > 0.01

    no_thresholds = pmml_fix.parse_pmml(raw)  # cause 2 left in
    pmml_fix.fix_intercept(no_thresholds, pmml_fix.base_score_of(booster))
    pmml_fix.fix_outputs(no_thresholds)
    result = _score(no_thresholds, tmp_path, "no_thresholds.pmml", x_test, features, p_native)
    assert not result.passed and result.max_abs_diff > 1e-6

    fixed, _ = pmml_fix.fix_pmml(raw, pipeline, features)
    root = pmml_fix.parse_pmml(fixed)
    result = _score(root, tmp_path, "fixed.pmml", x_test, features, p_native)
    assert result.passed, result.describe()
    assert result.max_abs_diff <= 1e-6 and result.flips == 0 and result.n == len(x_test)


def test_seed_entry_point_runs_and_maps_errors_to_exit_codes(tmp_path):
    script = REPO / "training" / "train.py"
    ok = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "--quick" in ok.stdout
    missing = tmp_path / "nowhere"
    bad = subprocess.run(
        [sys.executable, str(script), "--data", str(missing), "--out", str(tmp_path / "m"), "--quick"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2, bad.stderr
    assert f"error: {missing / 'X_train.csv'}: file not found." in bad.stderr
    assert not (tmp_path / "m").exists()
