"""The generator is deterministic, writes the seed's layout, and follows the documented ground truth."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data import generator, ground_truth
from experiment.cli.main import app
from experiment.core.errors import ConfigError
from training.dataset import load_dataset


def _digests(directory) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in generator.FILE_NAMES}


def test_same_seed_writes_identical_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    generator.write(generator.generate(customers=500, categories=12, seed=3), first)
    generator.write(generator.generate(customers=500, categories=12, seed=3), second)
    assert _digests(first) == _digests(second)


def test_different_seed_gives_different_data():
    a = generator.generate(customers=500, categories=12, seed=3)
    b = generator.generate(customers=500, categories=12, seed=4)
    assert not a.X_train.equals(b.X_train)


def test_layout_and_split(tmp_path):
    data = generator.generate(customers=1000, categories=10, seed=7)
    assert len(data.X_train) == 800 and len(data.X_test) == 200
    assert list(data.X_train.columns) == ["age", "man", "woman", *[f"cat{j}" for j in range(1, 11)]]
    assert data.X_train.index.intersection(data.X_test.index).empty
    assert data.X_train.index.is_monotonic_increasing
    assert (data.X_train.index == data.y_train.index).all()
    generator.write(data, tmp_path)
    header = (tmp_path / "X_train.csv").read_text().splitlines()[0]
    assert header.startswith("customer_id,age,man,woman,cat1,")
    assert (tmp_path / "y_test.csv").read_text().splitlines()[0] == "customer_id,label"
    loaded = load_dataset(tmp_path)  # the generator's output passes the loader's validation
    pd.testing.assert_frame_equal(loaded.X_test, data.X_test, check_names=False)
    assert loaded.y_train.tolist() == data.y_train["label"].tolist()


def test_features_follow_the_documented_distributions():
    rng = np.random.default_rng(11)
    x = ground_truth.sample_customers(20_000, 60, rng)
    assert x["age"].between(18, 90).all()
    assert abs(x["age"].mean() - 40.0) < 0.5  # 18 + Gamma(4, 5.5): mean 40
    assert ((x["man"] + x["woman"]) <= 1).all()
    assert abs(x["woman"].mean() - 0.49) < 0.015 and abs(x["man"].mean() - 0.47) < 0.015
    counts = x.filter(like="cat")
    assert (counts.to_numpy() >= 0).all()
    assert abs(counts.sum(axis=1).mean() - 3.6) < 0.15  # Gamma(0.9, 4) activity: mean 3.6 purchases
    assert (counts.to_numpy() == 0).mean() > 0.9  # sparse
    assert counts["cat1"].sum() > counts["cat60"].sum()  # Zipf popularity


def test_labels_are_bernoulli_of_the_documented_probability():
    rng = np.random.default_rng(5)
    x = ground_truth.sample_customers(40_000, 20, rng)
    q = ground_truth.label_probability(x)
    labels = ground_truth.sample_labels(x, rng)
    assert set(np.unique(labels)) == {0, 1}
    # Monte Carlo: the label rate equals mean(q) within 4 standard errors.
    se = np.sqrt(np.mean(q * (1 - q)) / len(q))
    assert abs(labels.mean() - q.mean()) < 4 * se
    for low, high in [(0.0, 0.2), (0.4, 0.6), (0.8, 1.0)]:
        band = (q >= low) & (q < high)
        assert low - 0.02 <= labels[band].mean() <= high + 0.02


def test_label_score_golden_values():
    x = pd.DataFrame({"age": [30, 70], "man": [0, 1], "woman": [1, 0], "cat2": [1, 0], "cat4": [0, 1], "cat6": [0, 2]})
    s0 = -2.8 + 3.0 * np.tanh(0.5) + 3.5 * 1.0  # young woman, one cat2 purchase, total 1
    s1 = -2.8 + 2.5 - 2.5 + 1.8 - 1.5  # older man with cat4, regular cat6 buyer, total 3, age >= 65
    expected = 1 / (1 + np.exp(-np.array([s0, s1])))
    np.testing.assert_allclose(ground_truth.label_probability(x), expected, rtol=1e-12)


def test_missing_category_columns_count_as_zero():
    rng = np.random.default_rng(2)
    x = ground_truth.sample_customers(200, 12, rng)
    x.loc[:, ["cat9", "cat10", "cat11", "cat12"]] = 0
    trimmed = x.drop(columns=["cat9", "cat10", "cat11", "cat12"])
    np.testing.assert_array_equal(ground_truth.label_probability(x), ground_truth.label_probability(trimmed))
    for a, b in zip(ground_truth.true_conversion_probs(x), ground_truth.true_conversion_probs(trimmed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_true_conversion_lift_depends_on_interest():
    rng = np.random.default_rng(9)
    x = ground_truth.sample_customers(5000, 20, rng)
    p0, p1 = ground_truth.true_conversion_probs(x)
    q = ground_truth.label_probability(x)
    assert ((p0 > 0) & (p0 < 1) & (p1 > 0) & (p1 < 1)).all()
    breakeven = 0.4 / 1.4
    # Women aged 25-34 get an extra +1.2 on the shown-logit (the known heterogeneous effect): for them showing always
    # helps; for everyone else the break-even interest decides.
    young_women = ((x["woman"] == 1) & (x["age"] >= 25) & (x["age"] < 35)).to_numpy()
    others = ~young_women
    assert (p1[others & (q > breakeven + 1e-9)] > p0[others & (q > breakeven + 1e-9)]).all()
    assert (p1[others & (q < breakeven - 1e-9)] < p0[others & (q < breakeven - 1e-9)]).all()
    assert (p1[young_women] > p0[young_women]).all() and young_women.sum() > 500
    logit_diff = np.log(p1 / (1 - p1)) - np.log(p0 / (1 - p0))
    np.testing.assert_allclose(logit_diff, 1.0 * q - 0.4 * (1 - q) + 1.2 * young_women, rtol=0, atol=1e-9)
    # Targeting the interested customers beats showing the category to everyone.
    targeted = np.where(q >= 0.5, p1, p0).mean()
    assert targeted > p1.mean() > p0.mean()
    revenue = ground_truth.expected_revenue(x, shown=False)
    mu, sigma = ground_truth.revenue_params(x)
    np.testing.assert_allclose(revenue, p0 * np.exp(mu + sigma**2 / 2))
    assert (ground_truth.sample_revenue(x, rng) > 0).all()


def test_trees_beat_a_linear_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    data = generator.generate(customers=8000, categories=20, seed=1)
    y_train, y_test = data.y_train["label"], data.y_test["label"]
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(data.X_train, y_train)
    trees = XGBClassifier(
        n_estimators=150, max_depth=3, learning_rate=0.1, tree_method="hist", n_jobs=1, random_state=0
    ).fit(data.X_train, y_train)
    auc_linear = roc_auc_score(y_test, linear.predict_proba(data.X_test)[:, 1])
    auc_trees = roc_auc_score(y_test, trees.predict_proba(data.X_test)[:, 1])
    assert auc_trees > auc_linear + 0.02
    assert auc_trees > 0.75


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categories": 5}, "at least 7"),
        ({"customers": 3}, "each split needs"),
        ({"test_fraction": 1.0}, "test fraction"),
    ],
)
def test_invalid_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        generator.generate(**({"customers": 100, "categories": 10} | kwargs))


def test_cli_generate(tmp_path):
    out = tmp_path / "data"
    args = ["data", "generate", "--out", str(out), "--customers", "300", "--categories", "9", "--seed", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "240 training and 60 test customers" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(generator.FILE_NAMES)


def test_cli_generate_rejects_too_few_categories(tmp_path):
    result = CliRunner().invoke(app, ["data", "generate", "--out", str(tmp_path / "d"), "--categories", "3"])
    assert result.exit_code == 2
    assert "--categories must be at least 7" in result.output
    assert not (tmp_path / "d").exists()
