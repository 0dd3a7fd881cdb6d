"""Parse our exported PMML into the compiler's IR (`experiment.model.ir.ModelSpec`), refusing every other shape.

Why refuse rather than ignore: the fast evaluators implement exactly the shape our exporter writes (StandardScaler
fields → a sum of binary regression trees → a logit RegressionModel, chained in a modelChain). Anything else raises
`ModelError` naming the unsupported element and where it sits, so a differently shaped model never gets a silently
wrong fast path; elements without scoring semantics (`Extension`, `Header`, `Output`, ...) are skipped.

Semantics pinned here, for the evaluators to follow (PMML 4.4): constants and scores are doubles parsed from their
decimal text; a split is a `SimplePredicate` and its complement (or `<True/>`); what a missing split value does
follows the tree's ``missingValueStrategy`` / ``noTrueChildStrategy`` (`MissingAction` on each node).
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.etree.ElementTree import Element

from experiment.core.errors import ModelError
from experiment.model.ir import (
    COMPARISONS,
    ApplyExpr,
    ConstExpr,
    Expr,
    FieldExpr,
    MissingAction,
    ModelSpec,
    Node,
    split_nodes,
)
from experiment.model.pmml_xml import local_name, parse_xml

__all__ = ["MAX_TREE_DEPTH", "parse_pmml"]

# Elements that carry no scoring semantics and may appear anywhere we look.
_IGNORED = frozenset(
    {"Extension", "Header", "MiningBuildTask", "ModelStats", "ModelExplanation", "Output", "ModelVerification"}
)
_ARITHMETIC = frozenset({"+", "-", "*", "/"})
_COMPLEMENT = {
    "lessThan": "greaterOrEqual",
    "lessOrEqual": "greaterThan",
    "greaterThan": "lessOrEqual",
    "greaterOrEqual": "lessThan",
}
#: Python's nested-block/indentation limits: a deeper tree cannot be compiled to nested if/else.
MAX_TREE_DEPTH = 80


def _children(elem: Element, allowed: set[str], where: str) -> list[Element]:
    """The element's children, refusing any tag that our evaluator would otherwise silently ignore."""
    kids = []
    for child in elem:
        tag = local_name(child.tag)
        if tag in _IGNORED:
            continue
        if tag not in allowed:
            raise ModelError(
                f"unsupported PMML element <{tag}> inside <{local_name(elem.tag)}> at {where}; "
                f"the fast scorer supports only {sorted(allowed)} here"
            )
        kids.append(child)
    return kids


def _one(elem: Element, tag: str, where: str) -> Element:
    found = [c for c in elem if local_name(c.tag) == tag]
    if len(found) != 1:
        raise ModelError(f"expected exactly one <{tag}> inside <{local_name(elem.tag)}> at {where}, found {len(found)}")
    return found[0]


def _float(text: str | None, what: str) -> float:
    if text is None:
        raise ModelError(f"missing number for {what}")
    try:
        return float(text.strip())
    except ValueError:
        raise ModelError(f"not a number for {what}: {text!r}") from None


def _reject_attrs(elem: Element, attrs: Sequence[str], where: str) -> None:
    for attr in attrs:
        if elem.get(attr) is not None:
            raise ModelError(f"unsupported attribute {attr}={elem.get(attr)!r} on <{local_name(elem.tag)}> at {where}")


def _parse_expr(elem: Element, where: str) -> Expr:
    tag = local_name(elem.tag)
    if tag == "FieldRef":
        _reject_attrs(elem, ["mapMissingTo"], where)
        name = elem.get("field")
        if not name:
            raise ModelError(f"<FieldRef> without a field at {where}")
        return FieldExpr(name)
    if tag == "Constant":
        dtype = elem.get("dataType", "double")
        if dtype != "double":
            raise ModelError(f"unsupported <Constant dataType={dtype!r}> at {where}; only double is supported")
        _reject_attrs(elem, ["missing"], where)
        return ConstExpr(_float(elem.text, f"<Constant> at {where}"))
    if tag == "Apply":
        function = elem.get("function", "")
        if function not in _ARITHMETIC:
            raise ModelError(
                f"unsupported <Apply function={function!r}> at {where}; only {sorted(_ARITHMETIC)} are supported"
            )
        _reject_attrs(elem, ["mapMissingTo", "defaultValue"], where)
        treatment = elem.get("invalidValueTreatment", "returnInvalid")
        if treatment != "returnInvalid":
            raise ModelError(f"unsupported invalidValueTreatment={treatment!r} on <Apply> at {where}")
        args = _children(elem, {"Apply", "FieldRef", "Constant"}, where)
        if len(args) != 2:
            raise ModelError(f"<Apply function={function!r}> at {where} has {len(args)} arguments; expected 2")
        return ApplyExpr(function, _parse_expr(args[0], where), _parse_expr(args[1], where))
    raise ModelError(f"unsupported PMML expression element <{tag}> at {where}")


def _parse_derived(container: Element, where: str) -> list[tuple[str, Expr]]:
    out = []
    for derived in _children(container, {"DerivedField"}, where):
        name = derived.get("name", "")
        dtype = derived.get("dataType", "double")
        if dtype != "double":
            raise ModelError(
                f"unsupported <DerivedField name={name!r} dataType={dtype!r}> at {where}; only double is supported"
            )
        (expr_elem,) = _children(derived, {"Apply", "FieldRef", "Constant"}, f"{where}/DerivedField[{name}]")
        out.append((name, _parse_expr(expr_elem, f"{where}/DerivedField[{name}]")))
    return out


def _true_predicate(segment: Element, where: str) -> None:
    preds = [
        c
        for c in segment
        if local_name(c.tag) in {"True", "False", "SimplePredicate", "CompoundPredicate", "SimpleSetPredicate"}
    ]
    if len(preds) != 1 or local_name(preds[0].tag) != "True":
        got = local_name(preds[0].tag) if preds else "none"
        raise ModelError(f"unsupported segment predicate <{got}> at {where}; only <True/> is supported")


def _parse_tree(tree_elem: Element, where: str) -> Node:
    if tree_elem.get("functionName") != "regression":
        raise ModelError(f"unsupported <TreeModel functionName={tree_elem.get('functionName')!r}> at {where}")
    strategy = tree_elem.get("missingValueStrategy", "none")
    no_true_child = tree_elem.get("noTrueChildStrategy", "returnNullPrediction")
    if strategy not in {"none", "nullPrediction", "lastPrediction", "defaultChild"}:
        raise ModelError(f"unsupported missingValueStrategy={strategy!r} on <TreeModel> at {where}")
    if no_true_child not in {"returnNullPrediction", "returnLastPrediction"}:
        raise ModelError(f"unsupported noTrueChildStrategy={no_true_child!r} on <TreeModel> at {where}")
    for kid in _children(tree_elem, {"MiningSchema", "Node", "LocalTransformations", "Targets"}, where):
        if local_name(kid.tag) in {"LocalTransformations", "Targets"}:
            raise ModelError(f"unsupported PMML element <{local_name(kid.tag)}> inside <TreeModel> at {where}")
    root = _one(tree_elem, "Node", where)
    root_preds = _children(root, {"True", "SimplePredicate", "Node", "ScoreDistribution"}, where)
    if not root_preds or local_name(root_preds[0].tag) != "True":
        raise ModelError(f"the root <Node> of the tree at {where} must carry <True/>")
    return _parse_node(root, strategy, no_true_child, f"{where}/Node", 0)


def _parse_node(elem: Element, strategy: str, no_true_child: str, where: str, depth: int) -> Node:
    if depth > MAX_TREE_DEPTH:
        raise ModelError(f"tree deeper than {MAX_TREE_DEPTH} levels at {where}")
    score = _float(elem.get("score"), f"score at {where}") if elem.get("score") is not None else None
    kids = [
        k
        for k in _children(elem, {"True", "SimplePredicate", "Node", "ScoreDistribution"}, where)
        if local_name(k.tag) == "Node"
    ]
    if not kids:
        if score is None:
            raise ModelError(f"leaf <Node> without a score at {where}")
        return Node(score=score)
    if len(kids) != 2:
        raise ModelError(
            f"unsupported <Node> with {len(kids)} children at {where}; the fast scorer supports "
            "binary splits (a SimplePredicate and its complement or <True/>)"
        )
    first_pred = _predicate(kids[0], f"{where}/Node[1]")
    second_pred = _predicate(kids[1], f"{where}/Node[2]")
    if local_name(first_pred.tag) != "SimplePredicate":
        raise ModelError(f"unsupported first-child predicate <{local_name(first_pred.tag)}> at {where}")
    field = first_pred.get("field", "")
    op = first_pred.get("operator", "")
    if op not in COMPARISONS:
        raise ModelError(f"unsupported SimplePredicate operator={op!r} at {where}/Node[1]")
    threshold = _float(first_pred.get("value"), f"SimplePredicate value at {where}/Node[1]")
    second_tag = local_name(second_pred.tag)
    if second_tag == "SimplePredicate":
        same = (
            second_pred.get("field") == field
            and second_pred.get("operator") == _COMPLEMENT[op]
            and _float(second_pred.get("value"), f"value at {where}/Node[2]") == threshold
        )
        if not same:
            raise ModelError(
                f"unsupported split at {where}: the second child's predicate is not the complement "
                f"of {field} {op} {threshold!r}"
            )
        second_is_true = False
    elif second_tag == "True":
        second_is_true = True
    else:
        raise ModelError(f"unsupported second-child predicate <{second_tag}> at {where}")

    # What PMML does when the split field is missing (PMML 4.4, TreeModel "Missing Value Handling").
    on_missing: MissingAction
    missing_child = 0
    if strategy == "nullPrediction":
        on_missing = "null"
    elif strategy == "lastPrediction":
        on_missing = "stay"
    elif strategy == "defaultChild":
        default_id = elem.get("defaultChild")
        ids = [kids[0].get("id"), kids[1].get("id")]
        if default_id is None or default_id not in ids:
            raise ModelError(
                f"missingValueStrategy=defaultChild but <Node> at {where} names no child id "
                f"(defaultChild={default_id!r}, child ids={ids})"
            )
        on_missing, missing_child = "child", ids.index(default_id)
    elif second_is_true:  # "none": UNKNOWN is FALSE, so the <True/> child wins
        on_missing, missing_child = "child", 1
    elif no_true_child == "returnLastPrediction":
        on_missing = "stay"
    else:
        on_missing = "null"
    return Node(
        score=score,
        field=field,
        threshold=threshold,
        op=op,
        first=_parse_node(kids[0], strategy, no_true_child, f"{where}/Node[1]", depth + 1),
        second=_parse_node(kids[1], strategy, no_true_child, f"{where}/Node[2]", depth + 1),
        on_missing=on_missing,
        missing_child=missing_child,
    )


def _predicate(node: Element, where: str) -> Element:
    preds = [
        c
        for c in node
        if local_name(c.tag) in {"True", "False", "SimplePredicate", "CompoundPredicate", "SimpleSetPredicate"}
    ]
    if len(preds) != 1:
        raise ModelError(f"<Node> at {where} has {len(preds)} predicates; expected 1")
    return preds[0]


def _parse_mining_schema(model: Element, where: str) -> tuple[list[str], dict[str, float], str | None]:
    schema = _one(model, "MiningSchema", where)
    active: list[str] = []
    replacements: dict[str, float] = {}
    target = None
    for mf in _children(schema, {"MiningField"}, f"{where}/MiningSchema"):
        name = mf.get("name", "")
        usage = mf.get("usageType", "active")
        if usage in {"target", "predicted"}:
            target = name
            continue
        if usage != "active":
            raise ModelError(f"unsupported MiningField usageType={usage!r} for {name!r} at {where}")
        outliers = mf.get("outliers", "asIs")
        if outliers != "asIs":
            raise ModelError(f"unsupported MiningField outliers={outliers!r} for {name!r} at {where}")
        invalid = mf.get("invalidValueTreatment", "returnInvalid")
        if invalid not in {"returnInvalid", "asIs"}:
            raise ModelError(f"unsupported MiningField invalidValueTreatment={invalid!r} for {name!r} at {where}")
        if mf.get("missingValueReplacement") is not None:
            replacements[name] = _float(mf.get("missingValueReplacement"), f"missingValueReplacement of {name}")
        active.append(name)
    return active, replacements, target


def parse_pmml(data: bytes, *, source: str = "<bytes>") -> ModelSpec:
    """Parse our PMML into a `ModelSpec`, refusing anything the compiled evaluators do not implement.

    `source` only names the file in error messages.
    """
    root = parse_xml(data, source=source)
    if local_name(root.tag) != "PMML":
        raise ModelError(f"{source}: root element is <{local_name(root.tag)}>, expected <PMML>")
    where = source
    kids = _children(root, {"DataDictionary", "TransformationDictionary", "MiningModel"}, where)
    tags = [local_name(k.tag) for k in kids]
    if tags.count("MiningModel") != 1:
        raise ModelError(f"{source}: expected exactly one top-level <MiningModel>, found {tags.count('MiningModel')}")
    dictionary = _one(root, "DataDictionary", where)
    data_fields: dict[str, Element] = {}
    for data_field in _children(dictionary, {"DataField"}, f"{where}/DataDictionary"):
        data_fields[data_field.get("name", "")] = data_field
    derived: list[tuple[str, Expr]] = []
    for k in kids:
        if local_name(k.tag) == "TransformationDictionary":
            derived += _parse_derived(k, f"{where}/TransformationDictionary")

    outer = _one(root, "MiningModel", where)
    where = f"{source}/MiningModel"
    if outer.get("functionName") != "classification":
        raise ModelError(
            f"unsupported top-level <MiningModel functionName={outer.get('functionName')!r}> "
            f"at {where}; expected classification"
        )
    inputs, replacements, target = _parse_mining_schema(outer, where)
    for name in inputs:
        df = data_fields.get(name)
        if df is None:
            raise ModelError(f"MiningField {name!r} at {where} has no DataField")
        if df.get("optype") != "continuous" or df.get("dataType") not in {"double", "float", "integer"}:
            raise ModelError(
                f"unsupported DataField {name!r} (optype={df.get('optype')!r}, "
                f"dataType={df.get('dataType')!r}); only continuous numeric inputs are supported"
            )
        if df.get("dataType") != "double":
            raise ModelError(f"unsupported DataField {name!r} dataType={df.get('dataType')!r}; only double")
        _children(df, set(), f"{where}/DataField[{name}]")  # Interval/Value restrictions are unsupported
    if target is None or target not in data_fields:
        raise ModelError(f"{where}: no target MiningField with a DataField")
    target_values = [v.get("value") for v in data_fields[target] if local_name(v.tag) == "Value"]
    if "1" not in target_values:
        raise ModelError(f"target {target!r} has values {target_values}; expected the positive class '1'")

    outer_kids = _children(outer, {"MiningSchema", "Segmentation", "LocalTransformations"}, where)
    for k in outer_kids:
        if local_name(k.tag) == "LocalTransformations":
            derived += _parse_derived(k, f"{where}/LocalTransformations")
    segmentation = _one(outer, "Segmentation", where)
    if segmentation.get("multipleModelMethod") != "modelChain":
        raise ModelError(
            f"unsupported multipleModelMethod={segmentation.get('multipleModelMethod')!r} at "
            f"{where}/Segmentation; expected modelChain"
        )
    segments = _children(segmentation, {"Segment"}, f"{where}/Segmentation")
    if len(segments) != 2:
        raise ModelError(f"{where}/Segmentation has {len(segments)} segments; expected 2 (trees, then link)")
    trees, sum_field = _parse_tree_ensemble(segments[0], f"{where}/Segment[1]", derived)
    intercept, coefficient, positive_first = _parse_link(segments[1], f"{where}/Segment[2]", sum_field)

    known = set(inputs) | {name for name, _ in derived}
    for name, expr in derived:
        _check_refs(expr, known, f"DerivedField {name!r}")
    for i, tree in enumerate(trees):
        _check_tree_fields(tree, known, f"{where}/Segment[1]/Segment[{i + 1}]")
    return ModelSpec(
        input_fields=tuple(inputs),
        missing_replacements=replacements,
        derived=tuple(derived),
        trees=tuple(trees),
        intercept=intercept,
        coefficient=coefficient,
        positive_is_first_table=positive_first,
        target=target,
    )


def _parse_tree_ensemble(segment: Element, where: str, derived: list[tuple[str, Expr]]) -> tuple[list[Node], str]:
    _true_predicate(segment, where)
    (model,) = [c for c in _children(segment, {"True", "MiningModel"}, where) if local_name(c.tag) == "MiningModel"]
    if model.get("functionName") != "regression":
        raise ModelError(f"unsupported <MiningModel functionName={model.get('functionName')!r}> at {where}")
    for k in _children(model, {"MiningSchema", "Segmentation", "LocalTransformations"}, where):
        if local_name(k.tag) == "LocalTransformations":
            derived += _parse_derived(k, f"{where}/LocalTransformations")
    outputs = [f for o in model if local_name(o.tag) == "Output" for f in o if local_name(f.tag) == "OutputField"]
    predicted = [f for f in outputs if f.get("feature", "predictedValue") == "predictedValue"]
    if len(predicted) != 1:
        raise ModelError(
            f"the tree ensemble at {where} must declare exactly one predictedValue OutputField "
            f"(it feeds the link model); found {len(predicted)}"
        )
    seg = _one(model, "Segmentation", where)
    if seg.get("multipleModelMethod") != "sum":
        raise ModelError(
            f"unsupported multipleModelMethod={seg.get('multipleModelMethod')!r} at {where}/Segmentation; expected sum"
        )
    trees = []
    for i, tree_segment in enumerate(_children(seg, {"Segment"}, f"{where}/Segmentation")):
        tw = f"{where}/Segment[{i + 1}]"
        _true_predicate(tree_segment, tw)
        (tree,) = [c for c in _children(tree_segment, {"True", "TreeModel"}, tw) if local_name(c.tag) == "TreeModel"]
        trees.append(_parse_tree(tree, tw))
    if not trees:
        raise ModelError(f"the tree ensemble at {where} has no trees")
    return trees, predicted[0].get("name", "")


def _parse_link(segment: Element, where: str, sum_field: str) -> tuple[float, float, bool]:
    _true_predicate(segment, where)
    (model,) = [
        c for c in _children(segment, {"True", "RegressionModel"}, where) if local_name(c.tag) == "RegressionModel"
    ]
    if model.get("functionName") != "classification" or model.get("normalizationMethod") != "logit":
        raise ModelError(
            f"unsupported <RegressionModel functionName={model.get('functionName')!r} "
            f"normalizationMethod={model.get('normalizationMethod')!r}> at {where}; "
            "expected classification with logit"
        )
    tables = [
        t
        for t in _children(model, {"MiningSchema", "RegressionTable"}, where)
        if local_name(t.tag) == "RegressionTable"
    ]
    if len(tables) != 2:
        raise ModelError(f"<RegressionModel> at {where} has {len(tables)} RegressionTables; expected 2")
    first, second = tables
    categories = [first.get("targetCategory"), second.get("targetCategory")]
    if sorted(c or "" for c in categories) != ["0", "1"]:
        raise ModelError(f"<RegressionTable> categories at {where} are {categories}; expected '0' and '1'")
    predictors = _children(first, {"NumericPredictor"}, f"{where}/RegressionTable[1]")
    if len(predictors) != 1 or predictors[0].get("name") != sum_field:
        raise ModelError(f"the first RegressionTable at {where} must have one NumericPredictor on {sum_field!r}")
    if predictors[0].get("exponent", "1") not in {"1", "1.0"}:
        raise ModelError(f"unsupported NumericPredictor exponent={predictors[0].get('exponent')!r} at {where}")
    if (
        _children(second, {"NumericPredictor"}, f"{where}/RegressionTable[2]")
        or _float(second.get("intercept", "0"), f"intercept at {where}") != 0.0
    ):
        raise ModelError(
            f"the second RegressionTable at {where} must be empty with intercept 0 "
            "(binary logit: its probability is 1 - p of the first)"
        )
    intercept = _float(first.get("intercept", "0"), f"intercept at {where}/RegressionTable[1]")
    coefficient = _float(predictors[0].get("coefficient"), f"coefficient at {where}")
    return intercept, coefficient, categories[0] == "1"


def _check_refs(expr: Expr, known: set[str], what: str) -> None:
    if isinstance(expr, FieldExpr):
        if expr.name not in known:
            raise ModelError(f"{what} refers to unknown field {expr.name!r}")
    elif isinstance(expr, ApplyExpr):
        _check_refs(expr.left, known, what)
        _check_refs(expr.right, known, what)


def _check_tree_fields(tree: Node, known: set[str], where: str) -> None:
    for node in split_nodes([tree]):
        if node.field not in known:
            raise ModelError(f"tree at {where} splits on unknown field {node.field!r}")
