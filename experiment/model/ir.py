"""The compiler's intermediate representation of our PMML: expressions, binary trees and the whole model.

Why a separate IR: parsing (`experiment.model.parse`) checks the file once and refuses what we do not implement;
everything after it (batch arrays, generated code, probe rows) works on these small frozen objects and never looks
at XML again. The one tree walk (`split_nodes`) and the field bookkeeping that several stages need live here too,
so that every stage visits the splits in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from experiment.core.errors import ModelError

__all__ = [
    "COMPARISONS",
    "ApplyExpr",
    "ConstExpr",
    "Expr",
    "FieldExpr",
    "MissingAction",
    "ModelSpec",
    "Node",
    "dependency_order",
    "expr_refs",
    "split_fields",
    "split_nodes",
]

#: The PMML comparison operators we implement, spelled as the Python operator with the same double semantics.
COMPARISONS = {"lessThan": "<", "lessOrEqual": "<=", "greaterThan": ">", "greaterOrEqual": ">="}

MissingAction = Literal["null", "stay", "child"]


@dataclass(frozen=True)
class FieldExpr:
    """A reference to an input or derived field."""

    name: str


@dataclass(frozen=True)
class ConstExpr:
    """A double constant, parsed from its decimal text exactly as a Java/Scala engine does."""

    value: float


@dataclass(frozen=True)
class ApplyExpr:
    """One arithmetic function (``+ - * /``) of two arguments, evaluated in double precision."""

    function: str
    left: Expr
    right: Expr


Expr = FieldExpr | ConstExpr | ApplyExpr


@dataclass(frozen=True)
class Node:
    """A parsed tree node; the root has no split, internal nodes a binary split on one field."""

    score: float | None
    field: str | None = None
    threshold: float = 0.0
    op: str = "lessThan"  # the first child's operator: first child is taken when `x op threshold`
    first: Node | None = None
    second: Node | None = None
    on_missing: MissingAction = "null"
    missing_child: int = 0  # 0 → first, 1 → second; used when on_missing == "child"

    @property
    def is_leaf(self) -> bool:
        """True for a node without children (it must then carry a score)."""
        return self.first is None


@dataclass(frozen=True)
class ModelSpec:
    """Everything our PMML says about how to score, in evaluation order."""

    input_fields: tuple[str, ...]
    missing_replacements: Mapping[str, float]
    derived: tuple[tuple[str, Expr], ...]
    trees: tuple[Node, ...]
    intercept: float
    coefficient: float
    positive_is_first_table: bool
    target: str

    @property
    def n_trees(self) -> int:
        """Number of trees (segments) in the ensemble."""
        return len(self.trees)


def split_nodes(trees: Iterable[Node]) -> Iterator[Node]:
    """Every internal (split) node, tree by tree in segment order, depth first.

    The one walk over the trees: the compiler's column order, the generated code and the probe rows all follow it,
    so its order is part of what makes them deterministic.
    """
    for tree in trees:
        stack = [tree]
        while stack:
            node = stack.pop()
            first, second = node.first, node.second
            if first is None or second is None:
                continue
            yield node
            stack += [first, second]


def split_fields(spec: ModelSpec) -> list[str]:
    """The fields the trees split on, in first-use order."""
    return list(dict.fromkeys(node.field or "" for node in split_nodes(spec.trees)))


def expr_refs(expr: Expr) -> list[str]:
    """The field names an expression reads, left to right (with repeats)."""
    if isinstance(expr, FieldExpr):
        return [expr.name]
    if isinstance(expr, ApplyExpr):
        return expr_refs(expr.left) + expr_refs(expr.right)
    return []


def dependency_order(derived: Mapping[str, Expr], wanted: Sequence[str]) -> list[str]:
    """The input and derived fields that `wanted` needs, each after everything it refers to."""
    order: list[str] = []
    visiting: set[str] = set()

    def need(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ModelError(f"DerivedField {name!r} refers to itself (a cycle)")
        visiting.add(name)
        if name in derived:
            for ref in expr_refs(derived[name]):
                need(ref)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        need(name)
    return order
