"""A tiny hand-written PMML in the exact shape of our export (scaler fields, modelChain, sum of trees, logit link).

Two trees: tree 1 splits the standardised `a` (`s(a) = (a - 1.5) / 2.0`) at 0.25 with a configurable operator;
tree 2 splits the raw input `b` at 3.0 (`lessThan`). Leaf scores and the intercept are chosen so that every path
gives a different probability: P = 1 / (1 + exp(-(INTERCEPT + tree1 + tree2))).
"""

from __future__ import annotations

__all__ = ["INTERCEPT", "LEAVES", "tiny_pmml"]

INTERCEPT = 0.2
LEAVES = {"t1_first": 1.0, "t1_second": -1.0, "t2_less": 0.5, "t2_more": -0.25}

_COMPLEMENT = {
    "lessThan": "greaterOrEqual",
    "lessOrEqual": "greaterThan",
    "greaterThan": "lessOrEqual",
    "greaterOrEqual": "lessThan",
}


def tiny_pmml(
    op: str = "lessThan",
    *,
    second: str = "complement",
    tree_attrs: str = 'noTrueChildStrategy="returnLastPrediction"',
    internal_score: float | None = None,
    derived: str | None = None,
    extra_model_xml: str = "",
    segment_method: str = "sum",
    doctype: str = "",
    default_child: bool = False,
) -> str:
    """The PMML text; each keyword swaps in one construct that a test needs."""
    if second == "complement":
        second_pred = f'<SimplePredicate field="s(a)" operator="{_COMPLEMENT[op]}" value="0.25"/>'
    elif second == "true":
        second_pred = "<True/>"
    else:
        second_pred = second
    score_attr = f' score="{internal_score!r}"' if internal_score is not None else ""
    ids = ' id="n1"' if default_child else ""
    ids2 = ' id="n2"' if default_child else ""
    default_attr = ' defaultChild="n2"' if default_child else ""
    m1, m2 = (' id="m1"', ' id="m2"') if default_child else ("", "")
    default_attr2 = ' defaultChild="m1"' if default_child else ""
    derived = derived or (
        '<Apply function="/"><Apply function="-"><FieldRef field="a"/>'
        '<Constant dataType="double">1.5</Constant></Apply><Constant dataType="double">2.0</Constant></Apply>'
    )
    schema = '<MiningSchema><MiningField name="a"/><MiningField name="b"/></MiningSchema>'
    return f"""<?xml version="1.0" encoding="UTF-8"?>{doctype}
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4.1">
  <Header description="tiny test model"/>
  <DataDictionary numberOfFields="3">
    <DataField name="a" optype="continuous" dataType="double"/>
    <DataField name="b" optype="continuous" dataType="double"/>
    <DataField name="label" optype="categorical" dataType="integer"><Value value="0"/><Value value="1"/></DataField>
  </DataDictionary>
  <TransformationDictionary>
    <DerivedField name="s(a)" optype="continuous" dataType="double">{derived}</DerivedField>
  </TransformationDictionary>
  <MiningModel modelName="XGBoostModel" functionName="classification">
    <MiningSchema>
      <MiningField name="a" usageType="active" optype="continuous"/>
      <MiningField name="b" usageType="active" optype="continuous"/>
      <MiningField name="label" usageType="target" optype="categorical"/>
    </MiningSchema>
    <Output>
      <OutputField name="probability_0" optype="continuous" dataType="double" feature="probability" value="0"/>
      <OutputField name="probability_1" optype="continuous" dataType="double" feature="probability" value="1"/>
    </Output>
    {extra_model_xml}
    <Segmentation multipleModelMethod="modelChain">
      <Segment id="1"><True/>
        <MiningModel functionName="regression">
          {schema}
          <Output><OutputField name="xgbValue" optype="continuous" dataType="double" feature="predictedValue"/></Output>
          <Segmentation multipleModelMethod="{segment_method}">
            <Segment id="1"><True/>
              <TreeModel functionName="regression" {tree_attrs}>
                {schema}
                <Node{score_attr}{default_attr}><True/>
                  <Node score="{LEAVES["t1_first"]!r}"{ids}>
                    <SimplePredicate field="s(a)" operator="{op}" value="0.25"/></Node>
                  <Node score="{LEAVES["t1_second"]!r}"{ids2}>{second_pred}</Node>
                </Node>
              </TreeModel>
            </Segment>
            <Segment id="2"><True/>
              <TreeModel functionName="regression" {tree_attrs}>
                {schema}
                <Node{default_attr2}><True/>
                  <Node score="{LEAVES["t2_less"]!r}"{m1}>
                    <SimplePredicate field="b" operator="lessThan" value="3.0"/></Node>
                  <Node score="{LEAVES["t2_more"]!r}"{m2}>
                    <SimplePredicate field="b" operator="greaterOrEqual" value="3.0"/></Node>
                </Node>
              </TreeModel>
            </Segment>
          </Segmentation>
        </MiningModel>
      </Segment>
      <Segment id="2"><True/>
        <RegressionModel functionName="classification" normalizationMethod="logit">
          <MiningSchema><MiningField name="xgbValue"/><MiningField name="label" usageType="target"/></MiningSchema>
          <RegressionTable intercept="{INTERCEPT!r}" targetCategory="1">
            <NumericPredictor name="xgbValue" exponent="1" coefficient="1.0"/>
          </RegressionTable>
          <RegressionTable intercept="0.0" targetCategory="0"/>
        </RegressionModel>
      </Segment>
    </Segmentation>
  </MiningModel>
</PMML>
"""
