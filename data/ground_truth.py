"""The documented ground-truth model behind abflow's synthetic data.

Why it exists: a simulated experiment only tests the platform if the true answer is known. Every number the
generator writes, and every purchase the simulator later emits, is drawn from the pure, vectorised functions
below, so the exact expected lift of any targeting policy can be computed per customer instead of estimated.

The story. The shop sells ``K`` product categories ``cat1..catK`` and wants to show a new one, ``cat{K+1}``
(``new_category(K)``). Past customers were shown it in a pilot; the label is 1 when the customer engaged with
it ("show it to people like this one"). The model learns ``P(label=1 | features)``; the experiment then shows
the new category to treatment customers whose score is at least the threshold.

1. Features (``sample_customers``), independent per customer:

   - ``age`` is an integer: ``18 + Gamma(shape=4, scale=5.5)``, rounded, clipped to [18, 90] (mean about 40).
   - gender: ``woman=1`` with probability 0.49, ``man=1`` with 0.47, neither (not stated) with 0.04.
   - purchase counts: an activity level ``lambda ~ Gamma(shape=0.9, scale=4)`` (expected purchases, mean
     3.6) is spread over categories by a customer-specific preference vector ``w ~ Dirichlet(3 * pi)``, where
     the base popularity ``pi_j`` is proportional to ``j ** -0.8`` (Zipf: ``cat1`` is the most popular) times
     a gender tilt (``j % 4 == 1`` categories are twice as popular with women, ``j % 4 == 3`` twice with men),
     renormalised. Then ``cat_j ~ Poisson(lambda * w_j)``. Most counts are 0 (sparse); a few customers buy a
     lot.

2. Label (``label_probability``): ``q(x) = sigmoid(s(x))`` and ``label ~ Bernoulli(q)``, with the score

   ``s = -2.8``
   ``+ 3.0 * tanh((cat2 + cat5) / 2)``                affinity saturates: the first purchases matter most
   ``+ 2.0 * [cat2 > 0 and cat7 > 0]``                interaction: the pair predicts more than either one
   ``+ 3.5 * woman * exp(-((age - 30) / 8) ** 2)``    interaction: young women, a bump in age, not a slope
   ``+ 2.5 * man * [age >= 50] * [cat4 > 0]``         three-way interaction: older men who buy cat4
   ``- 2.5 * [cat6 >= 2]``                            aversion: regular cat6 buyers dislike the new category
   ``+ 1.8 * [3 <= total <= 12]``                     non-monotone in activity (``total`` = sum of counts)
   ``- 1.5 * [age >= 65]``

   The thresholds, bumps and products are why gradient-boosted trees beat a linear model on this data.
   Needs ``K >= 7`` (``MIN_CATEGORIES``); the other categories carry no signal beyond ``total``.

3. True conversion (``true_conversion_probs``), the primary metric (a purchase in the attribution window):

   ``logit p0 = -2.9 + 0.45 * log1p(total) + 0.15 * woman - 0.01 * (age - 40)``   category hidden (default)
   ``logit p1 = logit p0 + 1.0 * q - 0.4 * (1 - q)``                               category shown
   ``         + 1.2 * woman * [25 <= age < 35]``                                   women aged 25-34: far more

   Showing the category to an interested customer raises conversion; to an uninterested one it lowers it a
   little (the slot displaces what they came for). The break-even interest is ``q = 0.4 / 1.4`` (for everyone
   but women aged 25-34). So a model that ranks ``q`` well lifts conversion, and showing it to everyone is worse
   than targeting.

   The last term is a known heterogeneous treatment effect, for the lift by segment (``age_band`` 25-34 and
   ``gender`` woman, ``experiment.core.segments``): the new category helps women aged 25-34 far more than their
   interest ``q`` says, whether the model targets them or not. It is not in the label, so no model can learn it;
   a segment breakdown must find it. On the simulator's population with the category shown when ``q >= 0.4``
   (about 16 % of customers are women aged 25-34, 96 % of them shown) the true lift is about +31 points in that
   group against +1.6 elsewhere: with 20,000 customers (10,000 per arm, about 1,600 of them in the group) the
   difference is over 15 standard errors.

4. Revenue of a conversion (``revenue_params`` / ``sample_revenue``): ``LogNormal(mu, 0.5)`` with
   ``mu = log(30) + 0.2 * log1p(total) + 0.005 * (age - 40)``, the same whether the category is shown or
   not, so the expected revenue per user is ``p * exp(mu + 0.5 ** 2 / 2)``.

All functions take a DataFrame with columns ``age``, ``man``, ``woman`` and any ``cat<j>`` columns; a missing
category column counts as 0 (a session may omit categories it never bought).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = [
    "MIN_CATEGORIES",
    "category_names",
    "expected_revenue",
    "feature_names",
    "label_probability",
    "new_category",
    "revenue_params",
    "sample_customers",
    "sample_labels",
    "sample_revenue",
    "true_conversion_probs",
]

MIN_CATEGORIES = 7
"""The label uses cat2, cat4, cat5, cat6 and cat7, so fewer categories cannot express the ground truth."""

_AGE_MIN, _AGE_MAX = 18, 90
_AGE_SHAPE, _AGE_SCALE = 4.0, 5.5
_P_WOMAN, _P_MAN = 0.49, 0.47
_ACTIVITY_SHAPE, _ACTIVITY_SCALE = 0.9, 4.0
_ZIPF_EXPONENT = 0.8
_PREFERENCE_CONCENTRATION = 3.0
_GENDER_TILT = 2.0

_UPLIFT_GAIN, _UPLIFT_COST = 1.0, 0.4
#: The extra shown-logit of women aged 25-34 (`_YOUNG_WOMEN_AGES`, lower bound included): section 3's last term.
_YOUNG_WOMEN_GAIN = 1.2
_YOUNG_WOMEN_AGES = (25.0, 35.0)
_REVENUE_SIGMA = 0.5

_CATEGORY = re.compile(r"^cat(\d+)$")


def category_names(k: int) -> list[str]:
    """The purchase-count columns ``cat1..catK`` in the seed's order."""
    return [f"cat{j}" for j in range(1, k + 1)]


def feature_names(k: int) -> list[str]:
    """All feature columns in the seed's order: ``age, man, woman, cat1..catK``."""
    return ["age", "man", "woman", *category_names(k)]


def new_category(k: int) -> str:
    """The category the experiment shows: the one after the ``k`` existing ones (``cat61`` for 60)."""
    return f"cat{k + 1}"


def _check_k(k: int) -> None:
    if k < MIN_CATEGORIES:
        raise ValueError(f"The ground truth needs at least {MIN_CATEGORIES} categories. Got {k}.")


def _popularity(k: int, woman: np.ndarray, man: np.ndarray) -> np.ndarray:
    """Per-customer base popularity ``pi`` (rows sum to 1): Zipf over categories, tilted by gender."""
    j = np.arange(1, k + 1)
    base = j.astype(float) ** -_ZIPF_EXPONENT
    women_tilt = np.where(j % 4 == 1, _GENDER_TILT, 1.0)
    men_tilt = np.where(j % 4 == 3, _GENDER_TILT, 1.0)
    tilt = 1.0 + woman[:, None] * (women_tilt - 1.0) + man[:, None] * (men_tilt - 1.0)
    pi = base[None, :] * tilt
    return pi / pi.sum(axis=1, keepdims=True)


def sample_customers(n: int, k: int, rng: np.random.Generator, first_id: int = 1) -> pd.DataFrame:
    """Draw ``n`` customers' features (section 1 of the module docstring).

    Returns a DataFrame indexed by ``customer_id`` (``first_id .. first_id + n - 1``) with the columns of
    ``feature_names(k)``, all integers. Deterministic given the generator's state.
    """
    _check_k(k)
    if n < 0:
        raise ValueError(f"The number of customers must be >= 0. Got {n}.")
    age = np.clip(np.rint(_AGE_MIN + rng.gamma(_AGE_SHAPE, _AGE_SCALE, size=n)), _AGE_MIN, _AGE_MAX)
    u = rng.random(n)
    woman = (u < _P_WOMAN).astype(np.int64)
    man = ((u >= _P_WOMAN) & (u < _P_WOMAN + _P_MAN)).astype(np.int64)
    activity = rng.gamma(_ACTIVITY_SHAPE, _ACTIVITY_SCALE, size=n)
    pi = _popularity(k, woman.astype(float), man.astype(float))
    # Dirichlet(alpha) per row, vectorised as normalised Gamma(alpha) draws.
    g = rng.gamma(_PREFERENCE_CONCENTRATION * pi)
    sums = g.sum(axis=1, keepdims=True)
    w = np.where(sums > 0, g / np.where(sums > 0, sums, 1.0), pi)
    counts = rng.poisson(activity[:, None] * w)
    frame = pd.DataFrame(counts.astype(np.int64), columns=category_names(k))
    frame.insert(0, "woman", woman)
    frame.insert(0, "man", man)
    frame.insert(0, "age", age.astype(np.int64))
    frame.index = pd.RangeIndex(first_id, first_id + n, name="customer_id")
    return frame


def _column(features: pd.DataFrame, name: str) -> np.ndarray:
    if name in features.columns:
        return features[name].to_numpy(dtype=float)
    return np.zeros(len(features), dtype=float)


def _total_purchases(features: pd.DataFrame) -> np.ndarray:
    cats = [c for c in features.columns if _CATEGORY.match(str(c))]
    if not cats:
        return np.zeros(len(features), dtype=float)
    return features[cats].to_numpy(dtype=float).sum(axis=1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def label_probability(features: pd.DataFrame) -> np.ndarray:
    """``q(x) = P(label = 1 | x)``, the customer's true interest in the new category (section 2)."""
    age = _column(features, "age")
    man = _column(features, "man")
    woman = _column(features, "woman")
    c2, c4, c5, c6, c7 = (_column(features, f"cat{j}") for j in (2, 4, 5, 6, 7))
    total = _total_purchases(features)
    s = (
        -2.8
        + 3.0 * np.tanh((c2 + c5) / 2.0)
        + 2.0 * ((c2 > 0) & (c7 > 0))
        + 3.5 * woman * np.exp(-(((age - 30.0) / 8.0) ** 2))
        + 2.5 * man * (age >= 50) * (c4 > 0)
        - 2.5 * (c6 >= 2)
        + 1.8 * ((total >= 3) & (total <= 12))
        - 1.5 * (age >= 65)
    )
    return _sigmoid(s)


def sample_labels(features: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Draw the 0/1 labels: ``Bernoulli(label_probability(features))``."""
    q = label_probability(features)
    return (rng.random(len(q)) < q).astype(np.int64)


def true_conversion_probs(features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's true conversion probability ``(p0, p1)``: category hidden, category shown (section 3).

    The true lift of a policy that shows the category to a set S of customers is
    ``mean(where(in S, p1, p0)) - mean(p0)`` on the absolute scale (conversion rate, per user); within a segment,
    the same means over its customers.
    """
    age = _column(features, "age")
    woman = _column(features, "woman")
    total = _total_purchases(features)
    logit_p0 = -2.9 + 0.45 * np.log1p(total) + 0.15 * woman - 0.01 * (age - 40.0)
    q = label_probability(features)
    young_women = (woman == 1.0) & (age >= _YOUNG_WOMEN_AGES[0]) & (age < _YOUNG_WOMEN_AGES[1])
    logit_p1 = logit_p0 + _UPLIFT_GAIN * q - _UPLIFT_COST * (1.0 - q) + _YOUNG_WOMEN_GAIN * young_women
    return _sigmoid(logit_p0), _sigmoid(logit_p1)


def revenue_params(features: pd.DataFrame) -> tuple[np.ndarray, float]:
    """``(mu, sigma)`` of the LogNormal revenue of one conversion, in currency units (section 4)."""
    age = _column(features, "age")
    total = _total_purchases(features)
    mu = np.log(30.0) + 0.2 * np.log1p(total) + 0.005 * (age - 40.0)
    return mu, _REVENUE_SIGMA


def expected_revenue(features: pd.DataFrame, shown: bool | np.ndarray) -> np.ndarray:
    """Expected revenue per user (conversion probability times mean order value), hidden or shown."""
    p0, p1 = true_conversion_probs(features)
    mu, sigma = revenue_params(features)
    p = np.where(shown, p1, p0)
    return p * np.exp(mu + sigma**2 / 2.0)


def sample_revenue(features: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Draw the revenue of one conversion per customer (positive, currency units)."""
    mu, sigma = revenue_params(features)
    return rng.lognormal(mu, sigma)
