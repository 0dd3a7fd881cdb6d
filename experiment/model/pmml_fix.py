"""Correct nyoka's PMML of ``Pipeline(StandardScaler, XGBClassifier)`` so a PMML engine scores like XGBoost.

Why: nyoka 5.5's export is silently wrong for xgboost >= 2 (probabilities far off, many decisions flipped at 0.5).
Every correction lives here, one function per cause, so each can be tested on its own:

1. ``base_score`` (`fix_intercept`). xgboost >= 2 estimates the base score from the data and keeps it only in
   ``booster.save_config()`` (``learner_model_param.base_score``, e.g. ``"[3.8E-1]"``, a probability). Every
   margin starts at ``logit(base_score)``, but nyoka writes intercept 0.0 in the final logit RegressionModel.
   We set that RegressionTable's intercept to ``logit(base_score)``.
2. float32 thresholds (`fix_thresholds`). XGBoost casts each (standardised) input to float32 and tests
   ``float32(z) < t`` with a float32 threshold ``t``; with ``tree_method="hist"`` the thresholds sit exactly
   on data values, so many rows tie. A PMML engine compares the double ``z`` with the double ``t``, so a row
   with ``z < t <= float32(z)`` goes down the other branch. We write, instead of ``t``, the exact double cut
   point ``c`` with ``z < c  <=>  float32(z) < t`` for every double ``z`` (see `float32_cut_point`).
   Thresholds are taken from the booster's own dump, walked in step with the PMML trees, so the PMML's text
   precision cannot matter. For the same reason the StandardScaler constants, which nyoka prints with 16
   decimals (too few for small scales), are rewritten as exact (shortest round-trip) doubles from the fitted
   scaler: the PMML engine then computes the same ``(x - mean) / scale`` as scikit-learn, bit for bit.
3. duplicate output fields (`fix_outputs`). nyoka declares the probability output fields twice, on the outer
   MiningModel and on the inner RegressionModel; JPMML rejects a field declared twice. We drop the inner
   copies.

The XML is parsed with `experiment.model.pmml_xml.parse_xml` (defusedxml: no DTDs, entities or external
references), never with a bare parser. nyoka's export itself stays in training; these corrections live with the rest
of the model artefact and take the fitted pipeline as a plain object, so this module imports no training code.
"""

from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiment.core.errors import ModelError
from experiment.model.pmml_xml import PMML_NAMESPACE, serialize_pmml
from experiment.model.pmml_xml import parse_xml as parse_pmml

__all__ = [
    "PMML_NAMESPACE",
    "FixReport",
    "base_score_of",
    "fix_intercept",
    "fix_outputs",
    "fix_pmml",
    "fix_thresholds",
    "float32_cut_point",
    "parse_pmml",
    "serialize_pmml",
]

logger = logging.getLogger(__name__)

_NS = {"p": PMML_NAMESPACE}


@dataclass(frozen=True)
class FixReport:
    """What `fix_pmml` changed: enough to audit the export in model.json or a log line."""

    base_score: float
    intercept: float
    thresholds_rewritten: int
    constants_rewritten: int
    output_fields_removed: int


def _tag(name: str) -> str:
    return f"{{{PMML_NAMESPACE}}}{name}"


def _require(element: ET.Element | None, what: str) -> ET.Element:
    if element is None:
        raise ModelError(f"Unexpected PMML structure: {what} not found (is this nyoka's xgboost_to_pmml output?).")
    return element


def base_score_of(booster: Any) -> float:
    """The base score (a probability for ``binary:logistic``) from ``booster.save_config()``, as float32."""
    config = json.loads(booster.save_config())
    learner = config["learner"]
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise ModelError(f"Only objective 'binary:logistic' can be exported. Got '{objective}'.")
    raw = str(learner["learner_model_param"]["base_score"]).strip().strip("[]")
    values = [v for v in raw.split(",") if v.strip()]
    if len(values) != 1:
        raise ModelError(f"Expected one base_score for a binary model. Got {raw!r}.")
    return float(np.float32(float(values[0])))


def fix_intercept(root: ET.Element, base_score: float) -> float:
    """Cause 1: set the final logit RegressionModel's intercept for class 1 to ``logit(base_score)``."""
    if not 0.0 < base_score < 1.0:
        raise ModelError(f"base_score must be a probability in (0, 1). Got {base_score}.")
    regression = _require(root.find(".//p:RegressionModel[@normalizationMethod='logit']", _NS), "logit RegressionModel")
    table = _require(regression.find("p:RegressionTable[@targetCategory='1']", _NS), "RegressionTable for class 1")
    intercept = math.log(base_score) - math.log1p(-base_score)
    table.set("intercept", repr(intercept))
    return intercept


def float32_cut_point(threshold: float) -> float:
    """The double ``c`` such that, for every double ``z``: ``z < c`` iff ``float32(z) < float32(threshold)``.

    Rounding to float32 is round-to-nearest-even, so ``float32(z) >= t`` iff ``z`` lies above the midpoint
    ``m`` between ``t`` and its float32 predecessor ``p`` (exact in double), or on it when the tie rounds up
    to ``t`` (``t``'s significand is even). So ``c = m`` when the tie rounds to ``t``, else the next double
    above ``m``.
    """
    t = np.float32(threshold)
    if not np.isfinite(t):
        raise ModelError(f"A split threshold must be finite. Got {threshold}.")
    with np.errstate(over="ignore"):  # overflow to -inf is float32's own rounding at the extremes
        p = float(np.nextafter(t, np.float32(-np.inf)))
        if np.isinf(p):  # t is the lowest float32: the virtual predecessor is -2**128, where rounding overflows
            p = float(t) - (float(np.nextafter(t, np.float32(np.inf))) - float(t))
        midpoint = (p + float(t)) / 2.0
        if float(np.float32(midpoint)) >= float(t):
            return midpoint
        return float(np.nextafter(midpoint, np.inf))


def _derived_names(root: ET.Element) -> dict[str, str]:
    """Map each derived field (e.g. ``standardScaler(age)``) to the input field it reads."""
    names = {}
    for field in root.findall("p:TransformationDictionary/p:DerivedField", _NS):
        ref = field.find(".//p:FieldRef", _NS)
        if ref is not None:
            names[field.get("name", "")] = ref.get("field", "")
    return names


def _walk(node: ET.Element, dump: dict[str, Any], features: Sequence[str], derived: dict[str, str], where: str) -> int:
    """Rewrite the two child predicates of every split in step with the booster's JSON dump; count them."""
    if "split" not in dump:
        if node.get("score") is None:
            raise ModelError(f"{where}: PMML node {dump.get('nodeid')} should be a leaf with a score.")
        return 0
    children = node.findall("p:Node", _NS)
    if len(children) != 2:
        raise ModelError(f"{where}: PMML node for split {dump['nodeid']} has {len(children)} children, expected 2.")
    yes, no = dump["children"]
    if yes["nodeid"] != dump["yes"]:
        raise ModelError(f"{where}: node {dump['nodeid']} lists its 'no' child first; nyoka assumes 'yes' first.")
    index = int(str(dump["split"]).removeprefix("f"))
    feature = features[index]
    cut = repr(float32_cut_point(float(dump["split_condition"])))
    for child, operator in zip(children, ("lessThan", "greaterOrEqual"), strict=True):
        predicate = _require(child.find("p:SimplePredicate", _NS), f"{where}: SimplePredicate")
        field = predicate.get("field", "")
        if predicate.get("operator") != operator or derived.get(field, field) != feature:
            raise ModelError(
                f"{where}: node {dump['nodeid']} predicate is '{field} {predicate.get('operator')}', "
                f"expected '{feature}' with '{operator}'."
            )
        predicate.set("value", cut)
    return 2 + _walk(children[0], yes, features, derived, where) + _walk(children[1], no, features, derived, where)


def fix_thresholds(
    root: ET.Element,
    booster: Any,
    features: Sequence[str],
    mean: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
) -> tuple[int, int]:
    """Cause 2: exact float32 cut points for every split, exact scaler constants. Returns both counts."""
    derived = _derived_names(root)
    constants = 0
    if mean is not None and scale is not None:
        position = {name: i for i, name in enumerate(features)}
        for field in root.findall("p:TransformationDictionary/p:DerivedField", _NS):
            source = derived.get(field.get("name", ""))
            divide = field.find("p:Apply[@function='/']", _NS)
            subtract = divide.find("p:Apply[@function='-']", _NS) if divide is not None else None
            if source not in position or divide is None or subtract is None:
                continue
            i = position[source]
            _require(subtract.find("p:Constant", _NS), f"mean of {source}").text = repr(float(mean[i]))
            _require(divide.find("p:Constant", _NS), f"scale of {source}").text = repr(float(scale[i]))
            constants += 2
    dumps = booster.get_dump(dump_format="json")
    trees = root.findall(".//p:Segmentation[@multipleModelMethod='sum']/p:Segment/p:TreeModel", _NS)
    if len(trees) != len(dumps):
        raise ModelError(f"The PMML holds {len(trees)} trees but the booster has {len(dumps)}.")
    rewritten = 0
    for number, (tree, text) in enumerate(zip(trees, dumps, strict=True), start=1):
        top = _require(tree.find("p:Node", _NS), f"tree {number}: root Node")
        rewritten += _walk(top, json.loads(text), features, derived, f"tree {number}")
    return rewritten, constants


def fix_outputs(root: ET.Element) -> int:
    """Cause 3: remove inner models' OutputFields that repeat a name the outermost model already declares."""
    model = next((child for child in root if child.tag == _tag("MiningModel")), None)
    model = _require(model, "top-level MiningModel")
    output = _require(model.find("p:Output", _NS), "top-level Output")
    outer = {field.get("name") for field in output.findall("p:OutputField", _NS)}
    removed = 0
    segmentation = _require(model.find("p:Segmentation", _NS), "top-level Segmentation")
    for inner_output in segmentation.findall(".//p:Output", _NS):
        for field in inner_output.findall("p:OutputField", _NS):
            if field.get("name") in outer:
                inner_output.remove(field)
                removed += 1
    for parent in segmentation.iter():
        for child in list(parent):
            if child.tag == _tag("Output") and len(child) == 0:
                parent.remove(child)
    return removed


def fix_pmml(pmml: bytes | str, pipeline: Any, feature_names: Sequence[str]) -> tuple[bytes, FixReport]:
    """Apply the three corrections to nyoka's PMML of a fitted ``Pipeline(StandardScaler, XGBClassifier)``."""
    root = parse_pmml(pmml)
    if root.tag != _tag("PMML"):
        raise ModelError(f"Expected a PMML 4.4 document. Got root element {root.tag!r}.")
    estimator = pipeline.steps[-1][1]
    booster = estimator.get_booster()
    scaler = pipeline.steps[0][1] if len(pipeline.steps) > 1 else None
    mean = getattr(scaler, "mean_", None)
    scale = getattr(scaler, "scale_", None)
    base_score = base_score_of(booster)
    intercept = fix_intercept(root, base_score)
    thresholds, constants = fix_thresholds(root, booster, feature_names, mean, scale)
    removed = fix_outputs(root)
    report = FixReport(
        base_score=base_score,
        intercept=intercept,
        thresholds_rewritten=thresholds,
        constants_rewritten=constants,
        output_fields_removed=removed,
    )
    logger.info(
        "pmml fixed base_score=%s intercept=%s thresholds=%d constants=%d outputs_removed=%d",
        base_score,
        intercept,
        thresholds,
        constants,
        removed,
    )
    return serialize_pmml(root), report
