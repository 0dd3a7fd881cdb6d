"""One test (at least) per cause that `experiment.model.pmml_fix` corrects, on nyoka's real output for a pipeline."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data import generator
from experiment.core.errors import ModelError
from experiment.model import pmml_fix

NS = {"p": pmml_fix.PMML_NAMESPACE}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small real pipeline and nyoka's raw (uncorrected) PMML for it."""
    from nyoka import xgboost_to_pmml
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    data = generator.generate(customers=1500, categories=10, seed=4)
    features = list(data.X_train.columns)
    pipeline = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("xgb", XGBClassifier(n_estimators=20, max_depth=3, tree_method="hist", random_state=0, n_jobs=1)),
        ]
    )
    pipeline.fit(data.X_train, data.y_train["label"])
    path = tmp_path_factory.mktemp("pmml") / "raw.pmml"
    xgboost_to_pmml(pipeline, features, "label", str(path))
    return pipeline, features, path.read_bytes(), data


def _splits(booster):
    """(feature index, float32 threshold) of every split in the booster, from its own JSON dump."""
    out = []

    def walk(node):
        if "split" in node:
            out.append((int(node["split"][1:]), np.float32(node["split_condition"])))
            for child in node["children"]:
                walk(child)

    for text in booster.get_dump(dump_format="json"):
        walk(json.loads(text))
    return out


# --- cause 1: base_score -------------------------------------------------------------------------------


def test_nyoka_writes_intercept_zero_and_fix_sets_logit_of_base_score(fitted):
    pipeline, _, raw, _ = fitted
    booster = pipeline[-1].get_booster()
    table = ".//p:RegressionModel/p:RegressionTable[@targetCategory='1']"
    assert float(pmml_fix.parse_pmml(raw).find(table, NS).get("intercept")) == 0.0  # the bug

    base_score = pmml_fix.base_score_of(booster)
    config = json.loads(booster.save_config())["learner"]["learner_model_param"]["base_score"]
    assert base_score == pytest.approx(float(config.strip("[]")), rel=1e-7)
    assert 0.2 < base_score < 0.5  # estimated from the labels (positive rate about a third), not 0.5

    root = pmml_fix.parse_pmml(raw)
    intercept = pmml_fix.fix_intercept(root, base_score)
    assert intercept == pytest.approx(math.log(base_score / (1 - base_score)), abs=1e-15)
    assert float(root.find(table, NS).get("intercept")) == intercept


def test_base_score_parses_bracketed_config_values():
    class _Booster:
        def save_config(self):
            return json.dumps(
                {
                    "learner": {
                        "objective": {"name": "binary:logistic"},
                        "learner_model_param": {"base_score": "[3.08E-1]"},
                    }
                }
            )

    assert pmml_fix.base_score_of(_Booster()) == float(np.float32(0.308))


# --- cause 2: float32 thresholds -----------------------------------------------------------------------


def _assert_cut_point_exact(t32: np.float32) -> None:
    c = pmml_fix.float32_cut_point(float(t32))
    with np.errstate(over="ignore"):
        p = np.nextafter(t32, np.float32(-np.inf))
    midpoint = (float(p) + float(t32)) / 2.0
    probes = [midpoint, np.nextafter(midpoint, np.inf), np.nextafter(midpoint, -np.inf), float(t32), float(p), c]
    probes += [-np.inf, np.inf, -3.5e38, 3.5e38, 0.0, -0.0]
    probes += [np.nextafter(c, np.inf), np.nextafter(c, -np.inf)]
    with np.errstate(over="ignore"):
        for z in probes:
            assert (z < c) == (np.float32(z) < t32), (t32, z, c)


@pytest.mark.parametrize(
    "t",
    [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        1e-30,
        -3.4e38,
        2.2243886,
        0.662890196,
        1.17549435e-38,
        1e-45,
        -1e-45,
        float(np.finfo(np.float32).min),
        float(np.finfo(np.float32).max),
    ],
)
def test_cut_point_reproduces_float32_comparison(t):
    _assert_cut_point_exact(np.float32(t))


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_cut_point_property(t):
    _assert_cut_point_exact(np.float32(t))


def test_ties_are_real_and_fixed_thresholds_route_every_training_row_like_xgboost(fitted):
    pipeline, _, _, data = fitted
    booster = pipeline[-1].get_booster()
    z = pipeline[0].transform(data.X_train)  # exactly what XGBoost receives, before its float32 cast
    z32 = z.astype(np.float32)
    naive_disagreements = 0
    for index, t in _splits(booster):
        xgboost_left = z32[:, index] < t
        naive_disagreements += int(np.sum((z[:, index] < float(t)) != xgboost_left))
        cut = pmml_fix.float32_cut_point(float(t))
        assert np.array_equal(z[:, index] < cut, xgboost_left)
    assert naive_disagreements > 0  # the bug: comparing doubles with the float32 threshold misroutes rows


def test_fix_thresholds_rewrites_every_split_and_scaler_constant(fitted):
    pipeline, features, raw, _ = fitted
    booster = pipeline[-1].get_booster()
    scaler = pipeline[0]
    root = pmml_fix.parse_pmml(raw)
    rewritten, constants = pmml_fix.fix_thresholds(root, booster, features, scaler.mean_, scaler.scale_)
    splits = _splits(booster)
    assert rewritten == 2 * len(splits)
    assert constants == 2 * len(features)
    values = Counter(float(p.get("value")) for p in root.iter(f"{{{pmml_fix.PMML_NAMESPACE}}}SimplePredicate"))
    expected = Counter(pmml_fix.float32_cut_point(float(t)) for _, t in splits for _ in range(2))
    assert values == expected
    for i, name in enumerate(features):
        field = root.find(f".//p:DerivedField[@name='standardScaler({name})']", NS)
        mean, scale = (float(c.text) for c in field.iter(f"{{{pmml_fix.PMML_NAMESPACE}}}Constant"))
        assert mean == scaler.mean_[i] and scale == scaler.scale_[i]  # bit for bit


def test_fix_thresholds_refuses_a_different_booster(fitted):
    _, features, raw, data = fitted
    from xgboost import XGBClassifier

    other = XGBClassifier(n_estimators=5, max_depth=2, tree_method="hist", n_jobs=1).fit(
        data.X_train.to_numpy(), data.y_train["label"]
    )
    with pytest.raises(ModelError, match="holds 20 trees but the booster has 5"):
        pmml_fix.fix_thresholds(pmml_fix.parse_pmml(raw), other.get_booster(), features)


# --- cause 3: duplicate output fields ------------------------------------------------------------------


def _output_names(root):
    return Counter(f.get("name") for f in root.iter(f"{{{pmml_fix.PMML_NAMESPACE}}}OutputField"))


def test_duplicate_output_fields_are_removed(fitted):
    _, _, raw, _ = fitted
    root = pmml_fix.parse_pmml(raw)
    duplicated = {name for name, count in _output_names(root).items() if count > 1}
    assert duplicated == {"label_probability_0", "label_probability_1", "predicted_label"}  # the bug
    assert pmml_fix.fix_outputs(root) == 3
    names = _output_names(root)
    assert max(names.values()) == 1
    assert {"label_probability_1", "xgbValue"} <= set(names)  # the final output and the chain's input stay
    top = root.find("p:MiningModel/p:Output", NS)
    assert [f.get("name") for f in top] == ["label_probability_0", "label_probability_1", "predicted_label"]


# --- the whole fix and the hardened parser --------------------------------------------------------------


def test_fix_pmml_report_and_serialisation(fitted):
    pipeline, features, raw, _ = fitted
    fixed, report = pmml_fix.fix_pmml(raw, pipeline, features)
    assert report.output_fields_removed == 3
    assert report.thresholds_rewritten == 2 * len(_splits(pipeline[-1].get_booster()))
    assert fixed.startswith(b"<?xml") and b"ns0:" not in fixed
    assert b'<PMML xmlns="http://www.dmg.org/PMML-4_4"' in fixed
    again = pmml_fix.parse_pmml(fixed)
    assert max(_output_names(again).values()) == 1


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<PMML xmlns="http://www.dmg.org/PMML-4_4">&lol2;</PMML>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE PMML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<PMML xmlns="http://www.dmg.org/PMML-4_4">&xxe;</PMML>"""


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, EXTERNAL_ENTITY, b"<PMML><unclosed></PMML>"])
def test_parser_rejects_entities_dtds_and_malformed_xml(payload):
    with pytest.raises(ModelError, match=r"refusing PMML <bytes>: it is not (safe|well-formed) XML"):
        pmml_fix.parse_pmml(payload)
