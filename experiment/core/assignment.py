"""Deterministic assignment of customers to experiment variants.

This is the contract everything else trusts: the Flink job, the simulator and any re-analysis must agree on who saw
what. It is a pure function of (salt, customer id, traffic, variants), so the same inputs give the same variant in any
process, on any machine, after any restart.

Two independent hashes are used: one decides whether the customer is in the experiment at all (traffic), the other
which variant they get. Raising or lowering traffic therefore only adds or removes customers; it never moves a
customer from one variant to another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["BUCKETS", "assign", "bucket", "in_traffic", "variant_for"]

BUCKETS = 10_000


def bucket(key: str) -> int:
    """Map a string to one of `BUCKETS` buckets: the first 8 bytes of its SHA-256, big-endian, modulo `BUCKETS`."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_traffic(salt: str, customer_id: str, traffic: float) -> bool:
    """Whether the customer falls inside the experiment's traffic fraction (0 < traffic <= 1)."""
    return bucket(f"{salt}:{customer_id}") < round(traffic * BUCKETS)


def variant_for(salt: str, customer_id: str, variants: Sequence[tuple[str, float]]) -> str:
    """The variant of an in-traffic customer: the first, in declared order, whose cumulative weight exceeds u.

    `variants` is `[(name, weight), ...]` with the control first and weights summing to 1. Float rounding can leave
    the cumulative sum a hair below 1; u < 1 always, and the last variant catches any remainder.
    """
    u = bucket(f"{salt}:variant:{customer_id}") / BUCKETS
    cumulative = 0.0
    for name, weight in variants:
        cumulative += weight
        if cumulative > u:
            return name
    return variants[-1][0]


def assign(salt: str, customer_id: str, traffic: float, variants: Sequence[tuple[str, float]]) -> str | None:
    """The customer's variant, or None when the customer is outside the experiment's traffic."""
    if not in_traffic(salt, customer_id, traffic):
        return None
    return variant_for(salt, customer_id, variants)
