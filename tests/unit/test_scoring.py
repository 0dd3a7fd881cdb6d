"""Unit tests of the PMML compiler and the scorer's pure parts (`experiment.model`), on tiny PMML (no JVM)."""

from __future__ import annotations

import hashlib
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiment.core.errors import ModelError
from experiment.model.compiled import compile_pmml
from experiment.model.digest import sha256_file
from experiment.model.parse import parse_pmml
from experiment.model.verify import probe_rows
from flink_pipeline.scoring import load_verified_scorer
from tests.helpers.tiny_pmml import INTERCEPT, LEAVES, tiny_pmml


def _p(*scores: float) -> float:
    return 1.0 / (1.0 + math.exp(-(INTERCEPT + sum(scores))))


def _compile(text: str):
    return compile_pmml(text.encode(), source="tiny.pmml")


def _both(model, a: float, b: float) -> tuple[float, float]:
    one = model.score_one({"a": a, "b": b})
    batch = float(model.score_batch(np.array([[a, b]]))[0])
    return one, batch


# ------------------------------------------------------------------ golden values, operator semantics


@pytest.mark.parametrize(
    ("op", "a", "first"),
    [
        ("lessThan", 2.0, False),  # s(2.0) == 0.25 exactly: a tie goes to the second child
        ("lessThan", 1.9, True),
        ("lessOrEqual", 2.0, True),
        ("lessOrEqual", 2.1, False),
        ("greaterOrEqual", 2.0, True),
        ("greaterOrEqual", 1.9, False),
        ("greaterThan", 2.0, False),
        ("greaterThan", 2.1, True),
    ],
)
def test_comparison_operators_follow_pmml_at_the_exact_threshold(op: str, a: float, first: bool) -> None:
    model = _compile(tiny_pmml(op))
    assert (a - 1.5) / 2.0 == 0.25 or a != 2.0
    t1 = LEAVES["t1_first"] if first else LEAVES["t1_second"]
    expected = _p(t1, LEAVES["t2_less"])
    one, batch = _both(model, a, 1.0)
    assert one == pytest.approx(expected, abs=1e-15)
    assert batch == pytest.approx(expected, abs=1e-15)


def test_tree_two_and_link_golden_values() -> None:
    model = _compile(tiny_pmml())
    assert model.score_one({"a": 0.0, "b": 3.0}) == pytest.approx(_p(1.0, -0.25), abs=1e-15)
    assert model.score_one({"a": 5.0, "b": 2.999}) == pytest.approx(_p(-1.0, 0.5), abs=1e-15)
    # golden number, computed by hand: 1 / (1 + exp(-(0.2 - 1.0 - 0.25)))
    assert model.score_one({"a": 5.0, "b": 3.0}) == pytest.approx(0.25922510, abs=1e-8)


def test_swapped_regression_tables_give_one_minus_p() -> None:
    swapped = tiny_pmml().replace('targetCategory="1"', 'targetCategory="X"')
    swapped = swapped.replace('targetCategory="0"', 'targetCategory="1"').replace(
        'targetCategory="X"', 'targetCategory="0"'
    )
    model = _compile(swapped)
    assert model.score_one({"a": 0.0, "b": 0.0}) == pytest.approx(1.0 - _p(1.0, 0.5), abs=1e-15)


@settings(max_examples=300, deadline=None)
@given(
    a=st.one_of(st.floats(-1e6, 1e6), st.sampled_from([2.0, math.nextafter(2.0, 0), math.nextafter(2.0, 3)])),
    b=st.one_of(st.floats(-1e6, 1e6), st.sampled_from([3.0, math.nextafter(3.0, 0), math.nextafter(3.0, 4)])),
    op=st.sampled_from(["lessThan", "lessOrEqual", "greaterThan", "greaterOrEqual"]),
)
def test_batch_and_per_record_paths_agree_with_a_direct_oracle(a: float, b: float, op: str) -> None:
    model = _compile(tiny_pmml(op))
    s = (a - 1.5) / 2.0
    first = {"lessThan": s < 0.25, "lessOrEqual": s <= 0.25, "greaterThan": s > 0.25, "greaterOrEqual": s >= 0.25}[op]
    expected = _p(
        LEAVES["t1_first"] if first else LEAVES["t1_second"], LEAVES["t2_less"] if b < 3.0 else LEAVES["t2_more"]
    )
    one, batch = _both(model, a, b)
    assert one == batch
    assert one == pytest.approx(expected, abs=1e-15)


# ------------------------------------------------------------------ absent features and missing values


def test_absent_features_count_as_zero_in_both_paths() -> None:
    model = _compile(tiny_pmml())
    assert model.score_one({"b": 1.0}) == model.score_one({"a": 0.0, "b": 1.0}) == pytest.approx(_p(1.0, 0.5))
    assert model.score_one({}) == pytest.approx(_p(1.0, 0.5))
    assert model.score_one({"a": 5.0, "b": 4.0, "unknown": 99.0}) == pytest.approx(_p(-1.0, -0.25))
    frame = pd.DataFrame({"b": [1.0, 4.0], "other": [7.0, 8.0]})
    np.testing.assert_array_equal(model.score_batch(frame), [_p(1.0, 0.5), _p(1.0, -0.25)])


@pytest.mark.parametrize(
    ("tree_attrs", "internal_score", "second", "expected_t1"),
    [
        # nyoka's default: no score on the split node, no true child -> the tree (and the score) is missing
        ('noTrueChildStrategy="returnLastPrediction"', None, "complement", None),
        ('noTrueChildStrategy="returnLastPrediction"', 0.3, "complement", 0.3),
        ('noTrueChildStrategy="returnNullPrediction"', 0.3, "complement", None),
        ('missingValueStrategy="nullPrediction"', 0.3, "complement", None),
        ('missingValueStrategy="lastPrediction"', 0.3, "complement", 0.3),
        ('missingValueStrategy="none"', None, "true", LEAVES["t1_second"]),  # UNKNOWN is FALSE, <True/> wins
    ],
)
def test_missing_value_follows_the_trees_strategy(
    tree_attrs: str, internal_score: float | None, second: str, expected_t1: float | None
) -> None:
    model = _compile(tiny_pmml(tree_attrs=tree_attrs, internal_score=internal_score, second=second))
    one, batch = _both(model, math.nan, 1.0)
    if expected_t1 is None:
        assert math.isnan(one) and math.isnan(batch)
    else:
        assert one == batch == pytest.approx(_p(expected_t1, LEAVES["t2_less"]), abs=1e-15)


def test_default_child_strategy() -> None:
    model = _compile(tiny_pmml(tree_attrs='missingValueStrategy="defaultChild"', default_child=True))
    one, batch = _both(model, math.nan, math.nan)
    assert one == batch == pytest.approx(_p(LEAVES["t1_second"], LEAVES["t2_less"]), abs=1e-15)


def test_missing_value_replacement_from_the_mining_schema() -> None:
    text = tiny_pmml().replace(
        '<MiningField name="a" usageType="active" optype="continuous"/>',
        '<MiningField name="a" usageType="active" optype="continuous" missingValueReplacement="2.0"/>',
    )
    model = _compile(text)
    one, batch = _both(model, math.nan, 1.0)
    assert one == batch == pytest.approx(_p(LEAVES["t1_second"], LEAVES["t2_less"]), abs=1e-15)


def test_batch_with_mixed_missing_rows_matches_per_record() -> None:
    model = _compile(tiny_pmml(internal_score=0.3))
    rng = np.random.default_rng(4)
    rows = rng.normal(2.0, 2.0, size=(500, 2))
    rows[rng.random(rows.shape) < 0.2] = np.nan
    batch = model.score_batch(rows)
    one = np.array([model.score_one({"a": a, "b": b}) for a, b in rows])
    np.testing.assert_array_equal(np.isnan(batch), np.isnan(one))
    np.testing.assert_array_equal(batch[~np.isnan(batch)], one[~np.isnan(one)])
    assert np.isnan(batch).sum() == np.isnan(rows[:, 1]).sum()  # tree 2 has no fallback score for b


# ------------------------------------------------------------------ refusals


_BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4.1"><Header description="&lol4;"/></PMML>
"""

_XXE = """<?xml version="1.0"?>
<!DOCTYPE PMML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4.1"><Header description="&xxe;"/></PMML>
"""


@pytest.mark.parametrize("text", [_BOMB, _XXE, tiny_pmml(doctype="<!DOCTYPE PMML>")], ids=["bomb", "xxe", "dtd"])
def test_xml_attacks_are_refused(text: str) -> None:
    with pytest.raises(ModelError, match=r"refusing PMML tiny\.pmml"):
        _compile(text)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            tiny_pmml(derived='<NormContinuous field="a"><LinearNorm orig="0" norm="0"/></NormContinuous>'),
            "NormContinuous",
        ),
        (
            tiny_pmml(second='<CompoundPredicate booleanOperator="or"><True/><False/></CompoundPredicate>'),
            "CompoundPredicate",
        ),
        (tiny_pmml(segment_method="average"), "multipleModelMethod='average'"),
        (tiny_pmml(extra_model_xml='<Targets><Target field="label" rescaleConstant="1"/></Targets>'), "Targets"),
        (tiny_pmml("equal", second="true"), "operator='equal'"),
        (tiny_pmml(derived='<Apply function="exp"><FieldRef field="a"/></Apply>'), "function='exp'"),
        (tiny_pmml().replace('<Constant dataType="double">2.0', '<Constant dataType="float">2.0'), "dataType='float'"),
        (tiny_pmml(tree_attrs='missingValueStrategy="weightedConfidence"'), "weightedConfidence"),
        (tiny_pmml().replace('normalizationMethod="logit"', 'normalizationMethod="probit"'), "probit"),
        (
            tiny_pmml().replace(
                '<DataField name="a" optype="continuous" dataType="double"/>',
                '<DataField name="a" optype="continuous" dataType="double">'
                '<Interval closure="closedClosed" leftMargin="0" rightMargin="9"/></DataField>',
            ),
            "Interval",
        ),
        ("<notpmml/>", "root element is <notpmml>"),
        ("<PMML", "not well-formed"),
    ],
)
def test_unsupported_pmml_is_refused_with_the_element_named(text: str, named: str) -> None:
    with pytest.raises(ModelError) as info:
        _compile(text)
    assert named in str(info.value)


def test_compiled_model_is_never_pickled() -> None:
    model = _compile(tiny_pmml())
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(model)


def test_wrong_shape_array_is_refused() -> None:
    model = _compile(tiny_pmml())
    with pytest.raises(ModelError, match=r"\(rows, 2\)"):
        model.score_batch(np.zeros((3, 5)))


def test_model_version_must_be_the_files_sha256(tmp_path) -> None:
    path = tmp_path / "tiny.pmml"
    path.write_text(tiny_pmml())
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == actual
    with pytest.raises(ModelError) as info:
        load_verified_scorer(path, "0" * 64)
    assert actual in str(info.value) and "0" * 64 in str(info.value)
    with pytest.raises(ModelError, match="does not exist"):
        load_verified_scorer(tmp_path / "absent.pmml", actual)


# ------------------------------------------------------------------ probe rows


def test_probe_rows_sit_on_and_around_every_cut_point() -> None:
    spec = parse_pmml(tiny_pmml().encode())
    rows = probe_rows(spec, n=400, seed=1)
    assert rows.shape == (400, 2)
    a_values = rows[:, 0]
    assert (a_values == 2.0).sum() > 10  # s(a) == 0.25 exactly
    assert (a_values == math.nextafter(2.0, 0)).sum() > 5
    assert (a_values == math.nextafter(2.0, 3)).sum() > 5
    assert (rows[:, 1] == 3.0).sum() > 10
    assert (probe_rows(spec, n=400, seed=1) == rows).all()  # deterministic per seed


def test_generated_source_has_one_branch_per_split_and_leaf() -> None:
    model = _compile(tiny_pmml())
    assert model.source.count("if ") == 2 + 1  # two splits + the missing-value guard
    assert model.source.count("s += ") == 4
    assert model.depth == 1  # each tree is one split deep: the batch walk takes one step


@settings(max_examples=150, deadline=None)
@given(
    mean=st.floats(-100, 100),
    scale=st.one_of(st.floats(1e-6, 1e3), st.floats(-1e3, -1e-6)),
    op=st.sampled_from(["lessThan", "lessOrEqual", "greaterThan", "greaterOrEqual"]),
    ulps=st.integers(-3, 3),
)
def test_folded_scaler_comparisons_are_exact_at_every_cut(mean: float, scale: float, op: str, ulps: int) -> None:
    """The per-record path compares raw inputs against precomputed cuts; it must equal PMML's `(a-m)/s op t`."""
    derived = (
        f'<Apply function="/"><Apply function="-"><FieldRef field="a"/><Constant dataType="double">'
        f'{mean!r}</Constant></Apply><Constant dataType="double">{scale!r}</Constant></Apply>'
    )
    model = _compile(tiny_pmml(op, derived=derived))
    assert "v0 < " in model.source or "v0 >= " in model.source  # the scaler was folded away
    a = 0.25 * scale + mean
    for _ in range(abs(ulps)):
        a = math.nextafter(a, math.inf if ulps > 0 else -math.inf)
    for value in (a, math.nextafter(a, -math.inf), math.nextafter(a, math.inf), float(round(a))):
        s = (value - mean) / scale
        first = {"lessThan": s < 0.25, "lessOrEqual": s <= 0.25, "greaterThan": s > 0.25, "greaterOrEqual": s >= 0.25}[
            op
        ]
        expected = _p(LEAVES["t1_first"] if first else LEAVES["t1_second"], LEAVES["t2_less"])
        assert model.score_one({"a": value, "b": 0}) == expected
        assert float(model.score_batch(np.array([[value, 0.0]]))[0]) == expected
