"""Per-variant sufficient statistics that merge exactly.

Everything abflow concludes about a variant is a function of a handful of sums over its users. Keeping those
sums in one frozen dataclass that adds (`a + b`) lets a stream aggregate, a batch recomputation from raw rows and a
per-day slice produce *the same object*. To make that literally true, money is counted in integer minor units (cents):
integer addition is exact, commutative and associative, whereas float sums depend on the order of the additions.

Per user the inputs are: `converted` (0/1), `revenue` (currency units, rounded to cents per outcome) and the
CUPED covariate `pre` (the customer's pre-period purchase count, an integer). Stored sums:

    users, conversions = Σ converted,
    revenue_cents_sum = Σ r, revenue_cents_sum_sq = Σ r², with r the user's revenue in cents,
    pre_sum = Σ x, pre_sum_sq = Σ x², pre_revenue_cents_cross = Σ x·r, pre_conversion_cross = Σ x·converted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

__all__ = ["CENTS_PER_UNIT", "VariantStats", "sample_cov", "to_cents"]

CENTS_PER_UNIT = 100


def to_cents(revenue: float) -> int:
    """Round one revenue amount (currency units) to integer cents; the store and any aggregate must agree."""
    return round(revenue * CENTS_PER_UNIT)


@dataclass(frozen=True, slots=True)
class VariantStats:
    """Sufficient statistics of one variant; `a + b` merges two disjoint sets of users exactly."""

    users: int = 0
    conversions: int = 0
    revenue_cents_sum: int = 0
    revenue_cents_sum_sq: int = 0
    pre_sum: int = 0
    pre_sum_sq: int = 0
    pre_revenue_cents_cross: int = 0
    pre_conversion_cross: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"VariantStats.{f.name} must be an int, got {type(value).__name__} {value!r}")
        if self.users < 0:
            raise ValueError(f"VariantStats.users must be >= 0, got {self.users}")
        if not 0 <= self.conversions <= self.users:
            raise ValueError(f"VariantStats.conversions must lie in [0, users={self.users}], got {self.conversions}")
        for name in ("revenue_cents_sum_sq", "pre_sum_sq"):
            if getattr(self, name) < 0:
                raise ValueError(f"VariantStats.{name} is a sum of squares and must be >= 0")

    def __add__(self, other: object) -> VariantStats:
        if not isinstance(other, VariantStats):
            return NotImplemented
        return VariantStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __radd__(self, other: object) -> VariantStats:
        # Lets `sum(list_of_stats)` work: sum() starts from the int 0.
        if other == 0:
            return self
        return self.__add__(other)

    # -- constructors
    # -------------------------------------------------------------------------------------------

    @classmethod
    def of_user(cls, converted: bool, revenue: float = 0.0, pre_period_purchases: int = 0) -> VariantStats:
        """The statistics of a single user (revenue in currency units)."""
        return cls.of_user_cents(bool(converted), to_cents(revenue), int(pre_period_purchases))

    @classmethod
    def of_user_cents(cls, converted: bool, revenue_cents: int, pre_period_purchases: int) -> VariantStats:
        """The statistics of a single user whose revenue is already in cents."""
        c = 1 if converted else 0
        r, x = int(revenue_cents), int(pre_period_purchases)
        return cls(1, c, r, r * r, x, x * x, x * r, x * c)

    @classmethod
    def of_users(
        cls,
        converted: Iterable[bool],
        revenue: Iterable[float],
        pre_period_purchases: Iterable[int],
    ) -> VariantStats:
        """Batch recomputation from raw per-user columns (the oracle the store is tested against)."""
        total = cls()
        for c, r, x in zip(converted, revenue, pre_period_purchases, strict=True):
            total = total + cls.of_user(c, r, x)
        return total

    @classmethod
    def from_counts(cls, users: int, conversions: int) -> VariantStats:
        """Only users and conversions (e.g. `abflow stats`): revenue and covariate sums are zero."""
        return cls(users=users, conversions=conversions)

    # -- derived quantities (None when undefined; callers attach the reason)
    # ---------------------------------------

    @property
    def revenue_sum(self) -> float:
        """Σ revenue in currency units."""
        return self.revenue_cents_sum / CENTS_PER_UNIT

    @property
    def revenue_sum_sq(self) -> float:
        """Σ revenue² in currency units squared."""
        return self.revenue_cents_sum_sq / CENTS_PER_UNIT**2

    @property
    def pre_revenue_cross(self) -> float:
        """Σ pre_period_purchases · revenue, in currency units."""
        return self.pre_revenue_cents_cross / CENTS_PER_UNIT

    @property
    def conversion_rate(self) -> float | None:
        """Conversions per user (a proportion in [0, 1]); None without users."""
        return self.conversions / self.users if self.users else None

    @property
    def revenue_per_user(self) -> float | None:
        """Mean revenue per user in currency units; None without users."""
        return self.revenue_sum / self.users if self.users else None

    @property
    def revenue_variance(self) -> float | None:
        """Sample variance (n − 1) of revenue per user, currency units²; None with fewer than two users."""
        var_cents = sample_cov(self.users, self.revenue_cents_sum, self.revenue_cents_sum, self.revenue_cents_sum_sq)
        return None if var_cents is None else var_cents / CENTS_PER_UNIT**2

    @property
    def pre_mean(self) -> float | None:
        """Mean pre-period purchase count per user."""
        return self.pre_sum / self.users if self.users else None


def sample_cov(n: int, sum_a: int, sum_b: int, sum_ab: int) -> float | None:
    """Unbiased sample covariance from integer sums, (n·Σab − Σa·Σb) / (n·(n − 1)); None when n < 2.

    With integer sums the numerator is computed exactly (no catastrophic cancellation even at n = 1e8); only
    the final division rounds.
    """
    if n < 2:
        return None
    return (n * sum_ab - sum_a * sum_b) / (n * (n - 1))
