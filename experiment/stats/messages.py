"""Machine-readable reasons why a statistic is undefined.

A statistic that cannot be computed from the data (no users, a zero baseline, zero variance) is reported as
`null` together with one of these reasons, so that a report, the dashboard or a script can branch on the *cause* instead
of parsing prose or meeting a NaN. Misuse (a negative count, weights that do not sum to one) raises instead.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reason"]


class Reason(StrEnum):
    """Why a value is `null`; the string value is what JSON output carries."""

    NO_USERS = "no_users_in_variant"
    TOO_FEW_USERS = "fewer_than_two_users_in_variant"
    ZERO_BASELINE = "zero_control_mean"
    ZERO_VARIANCE = "zero_variance"
    NO_PRE_PERIOD_VARIANCE = "zero_pre_period_variance"
    NOT_ENOUGH_DATA = "not_enough_data"
    NO_P_VALUE = "p_value_undefined"
    NO_PLAN = "no_planned_sample_size_or_mde"
    SOLVER_FAILED = "power_solver_did_not_converge"
    NOT_A_PROPORTION = "metric_is_not_a_proportion"
