"""The decision rules of the job, as pure functions on plain per-customer state.

Why pure and here: the Flink job (`flink_pipeline.functions.DecideFunction`) and the simulator must decide alike,
and the rules must be testable in milliseconds without Flink. The job only parses, reads and writes keyed state,
calls these functions and emits what they return. Nothing here does I/O; time comes in as arguments.

The rules, each a function below:

- Only running experiments assign; one with any arm's model unusable assigns nobody, in any arm (skipping only the
  arms of that model would unbalance the arms and bias the comparison; `arm_scorers`).
- The control arm is never scored; every other arm is scored by its own model (`ExperimentView.arm`: the arm's
  own model from `arm_models`, else the experiment's) and shown iff score >= its own threshold (`decide`,
  `decide_many`).
- The first exposure per (customer, experiment) is kept forever: variant, event time, pre-period purchases.
- An outcome belongs to an exposure iff exposure.ts <= outcome.ts <= exposure.ts + attribution window.
- An outcome that arrives while some running experiment has not exposed the customer (or none runs yet) is held
  for `hold_ms` of processing time, so that a late first exposure still gets it; when the hold ends it counts as
  a pre-period purchase, and as an orphan if no experiment got it.
- Pre-period purchases (the CUPED covariate) = the session's purchase counts + the purchases seen before and no
  longer held + the held outcomes earlier in event time than the exposure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from experiment.core.assignment import assign
from experiment.core.events import Outcome, Session
from experiment.core.view import ArmSpec, ExperimentView

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "STATE_FORMAT",
    "ArmScorers",
    "Assigned",
    "Attribution",
    "CustomerState",
    "Decision",
    "ExpiryResult",
    "Exposed",
    "Exposure",
    "HeldOutcome",
    "OutcomeResult",
    "Scorer",
    "SessionResult",
    "SkipReason",
    "Skipped",
    "Unattributed",
    "arm_scorers",
    "decide",
    "decide_many",
    "decide_session",
    "expire_held",
    "in_window",
    "must_hold",
    "pre_period",
    "record_outcome",
    "record_session",
]

Decision = Literal["show", "hide"]
#: Why a session gets no assignment from an experiment (each is also the job's metric name but `not_running`,
#: which the job counts as `sessions_skipped_<status>`).
SkipReason = Literal["not_running", "model_unusable", "not_in_traffic"]
#: Why an exposed customer's outcome is not attributed to that exposure.
Unattributed = Literal["outside_window", "before_exposure"]

#: Version of the tuple layout `CustomerState.to_state` writes to keyed state (savepoints hold it): bump it only
#: with a reader for the old layout.
STATE_FORMAT = 1


class Scorer(Protocol):
    """What deciding needs from a model: P(show) of one session's features."""

    def score_one(self, features: Mapping[str, float]) -> float:  # pragma: no cover - protocol
        """P(class = 1)."""
        ...


#: Every scored arm's scorer of one experiment, by variant name (what `decide_session` scores an arm with).
ArmScorers = Mapping[str, Scorer]


# --------------------------------------------------------------------------------------------------------------
# Per-customer state
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exposure:
    """A customer's first exposure to one experiment."""

    variant: str
    ts: int
    pre_period_purchases: int


@dataclass(frozen=True, slots=True)
class HeldOutcome:
    """An outcome kept because some running experiment had not exposed the customer yet."""

    outcome: Outcome
    expires_at: int
    attributed_to: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CustomerState:
    """Everything the job keeps per customer (one value, so one state read per record). Never mutated."""

    exposures: Mapping[str, Exposure] = field(default_factory=dict)
    #: Purchases seen (and no longer held) before any later first exposure: part of the CUPED covariate.
    purchases: int = 0
    held: tuple[HeldOutcome, ...] = ()

    def to_state(self) -> tuple[Any, ...]:
        """Plain tuples for the state backend: pickling them is several times faster than pickling dataclasses.

        The layout is what existing savepoints hold: (format, {id: (variant, ts, pre)}, purchases,
        [(outcome fields, expires_at, sorted attributed ids)]).
        """
        return (
            STATE_FORMAT,
            {exp_id: (e.variant, e.ts, e.pre_period_purchases) for exp_id, e in self.exposures.items()},
            self.purchases,
            [(_outcome_fields(item.outcome), item.expires_at, tuple(sorted(item.attributed_to))) for item in self.held],
        )

    @classmethod
    def from_state(cls, state: tuple[Any, ...]) -> CustomerState:
        """The inverse of `to_state`."""
        version, exposures, purchases, held = state
        if version != STATE_FORMAT:
            raise ValueError(f"customer state format {version!r} is not {STATE_FORMAT}")
        return cls(
            exposures={exp_id: Exposure(*fields) for exp_id, fields in exposures.items()},
            purchases=purchases,
            held=tuple(
                HeldOutcome(Outcome(*outcome), expires_at, frozenset(attributed))
                for outcome, expires_at, attributed in held
            ),
        )


def _outcome_fields(outcome: Outcome) -> tuple[Any, ...]:
    """The fields of an outcome in `Outcome`'s order, so `Outcome(*fields)` rebuilds it."""
    return (outcome.event_id, outcome.customer_id, outcome.ts, outcome.type, outcome.category, outcome.revenue)


# --------------------------------------------------------------------------------------------------------------
# Who is shown what
# --------------------------------------------------------------------------------------------------------------


def decide(score: float | None, threshold: float, scored: bool) -> Decision:
    """Show iff the arm is scored and its score >= threshold; an unscored arm (the control) is always hidden.

    A scored arm without a finite score raises `ValueError`: NaN would silently hide, and the score is published.
    The message is the one `json` gives, which the job's dead letters have always carried.
    """
    if not scored:
        return "hide"
    if score is None or not math.isfinite(score):
        raise ValueError(f"Out of range float values are not JSON compliant: score={score}")
    return "show" if score >= threshold else "hide"


def decide_many(
    scores: npt.NDArray[np.float64], threshold: float, scored: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """`decide` over arrays, True where it says "show" (the simulator decides a whole population at once).

    Scores of unscored rows are ignored (the simulator scores everyone, for the true lift). Held equal to `decide`
    element by element by a property test.
    """
    import numpy as np

    bad = scored & ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"Out of range float values are not JSON compliant: score={scores[bad][0]}")
    return scored & (scores >= threshold)


class Assigned(NamedTuple):
    """A running experiment's decision for one session; `score` is None when the arm is not scored.

    `spec` is the arm's model and threshold (`ExperimentView.arm`), None for the control.
    """

    view: ExperimentView
    variant: str
    score: float | None
    decision: Decision
    spec: ArmSpec | None = None


class Skipped(NamedTuple):
    """An experiment that assigns nothing to this session, and why."""

    view: ExperimentView
    reason: SkipReason


def arm_scorers(
    view: ExperimentView, scorer_of: Callable[[ExperimentView, ArmSpec], Scorer | None]
) -> dict[str, Scorer] | None:
    """Each scored arm's scorer by variant, or None when ANY arm's model is unusable (`scorer_of` gave None).

    None makes the whole experiment assign nobody (`decide_session`): assigning the other arms while one lacks its
    model would bias the comparison. Every arm is asked, also after an unusable one, so that every model is loaded
    (and its health known) at once. Resolve this once per view, not per session (the job caches it per view).
    """
    scorers: dict[str, Scorer] = {}
    usable = True
    for spec in view.arms:
        scorer = scorer_of(view, spec)
        if scorer is None:
            usable = False
        else:
            scorers[spec.variant] = scorer
    return scorers if usable else None


def decide_session(
    customer_id: str,
    features: Mapping[str, float],
    views: Iterable[ExperimentView],
    scorers_of: Callable[[ExperimentView], ArmScorers | None],
) -> tuple[Assigned | Skipped, ...]:
    """Every experiment's decision for one session, in the order of `views`; needs no customer history.

    `scorers_of` gives the experiment's scorer per scored arm (`arm_scorers`), or None when any of its models is
    unusable; it is asked for running experiments only. A customer's arm is scored by its own model only, with
    its own threshold; the control by none. A non-finite score raises (see `decide`).
    """
    arms: list[Assigned | Skipped] = []
    for view in views:
        if not view.is_running:
            arms.append(Skipped(view, "not_running"))
            continue
        scorers = scorers_of(view)
        if scorers is None:
            arms.append(Skipped(view, "model_unusable"))
            continue
        variant = assign(view.salt, customer_id, view.traffic, view.weights)
        if variant is None:
            arms.append(Skipped(view, "not_in_traffic"))
            continue
        spec = view.arm(variant)
        if spec is None:  # the control: never scored
            arms.append(Assigned(view, variant, None, "hide"))
            continue
        score = float(scorers[variant].score_one(features))
        arms.append(Assigned(view, variant, score, decide(score, spec.threshold, True), spec))
    return tuple(arms)


# --------------------------------------------------------------------------------------------------------------
# Exposures and outcomes
# --------------------------------------------------------------------------------------------------------------


class Attribution(NamedTuple):
    """An outcome credited to a customer's first exposure to one experiment."""

    experiment_id: str
    variant: str
    exposure_ts: int
    outcome: Outcome


class Exposed(NamedTuple):
    """An assignment as the customer's history records it.

    `exposure` is the customer's first exposure to the experiment (this session's when `first`); `late` are the
    held outcomes that this first exposure now gets.
    """

    arm: Assigned
    exposure: Exposure
    first: bool
    late: tuple[Attribution, ...] = ()


class SessionResult(NamedTuple):
    """The customer's new state (the same object when nothing changed) and one `Exposed` per `Assigned`, in order."""

    state: CustomerState
    exposed: tuple[Exposed, ...]
    #: Whether the state must be written (some first exposure).
    changed: bool


def in_window(exposure: Exposure, outcome_ts: int, window_ms: int) -> bool:
    """Whether an outcome at `outcome_ts` belongs to `exposure`: not before it, at most `window_ms` after."""
    return exposure.ts <= outcome_ts <= exposure.ts + window_ms


def pre_period(state: CustomerState, session: Session) -> int:
    """The CUPED covariate of a first exposure at this session: its purchase counts + purchases seen before it."""
    held = sum(1 for item in state.held if item.outcome.ts < session.ts) if state.held else 0
    return session.purchases + state.purchases + held


def record_session(state: CustomerState, session: Session, arms: Iterable[Assigned | Skipped]) -> SessionResult:
    """Record the session's assignments: first exposures (kept forever) and the held outcomes they now get."""
    exposures = state.exposures
    held = state.held
    added: dict[str, Exposure] = {}
    exposed: list[Exposed] = []
    for arm in arms:
        if not isinstance(arm, Assigned):
            continue
        view = arm.view
        exposure = exposures.get(view.id)
        if exposure is None and added:
            exposure = added.get(view.id)
        if exposure is not None:
            exposed.append(Exposed(arm, exposure, first=False))
            continue
        exposure = added[view.id] = Exposure(arm.variant, session.ts, pre_period(state, session))
        late: list[Attribution] = []
        if held:
            kept: list[HeldOutcome] = []
            for item in held:
                if in_window(exposure, item.outcome.ts, view.attribution_window_ms):
                    late.append(Attribution(view.id, exposure.variant, exposure.ts, item.outcome))
                    item = HeldOutcome(item.outcome, item.expires_at, item.attributed_to | {view.id})
                kept.append(item)
            held = tuple(kept)
        exposed.append(Exposed(arm, exposure, first=True, late=tuple(late)))
    if not added:
        return SessionResult(state, tuple(exposed), changed=False)
    return SessionResult(CustomerState({**exposures, **added}, state.purchases, held), tuple(exposed), changed=True)


def must_hold(state: CustomerState, views: Iterable[ExperimentView]) -> bool:
    """Whether an outcome now must wait for an exposure: some running experiment lacks one, or none runs yet."""
    running = False
    for view in views:
        if view.is_running:
            if view.id not in state.exposures:
                return True
            running = True
    return not running


class OutcomeResult(NamedTuple):
    """The customer's new state, the attributions, and why each other exposure did not get the outcome.

    `held_until` is when the hold ends (processing time, ms) if the outcome is held, else None; `orphan` says it is
    held for a customer no experiment has exposed yet.
    """

    state: CustomerState
    attributed: tuple[Attribution, ...]
    unattributed: tuple[tuple[str, Unattributed], ...]
    held_until: int | None
    orphan: bool


def record_outcome(
    state: CustomerState,
    outcome: Outcome,
    views: Mapping[str, ExperimentView],
    *,
    hold_ms: int,
    now: Callable[[], int],
) -> OutcomeResult:
    """Attribute an outcome to the customer's exposures (experiments in `views` only), then hold or count it.

    `now` gives the processing time (ms); it is read only when the outcome is held (in the job it costs a JNI hop).
    """
    attributed: list[Attribution] = []
    unattributed: list[tuple[str, Unattributed]] = []
    for exp_id, exposure in state.exposures.items():
        view = views.get(exp_id)
        if view is None:
            continue
        if in_window(exposure, outcome.ts, view.attribution_window_ms):
            attributed.append(Attribution(exp_id, exposure.variant, exposure.ts, outcome))
        elif outcome.ts > exposure.ts:
            unattributed.append((exp_id, "outside_window"))
        else:
            unattributed.append((exp_id, "before_exposure"))
    if must_hold(state, views.values()):
        until = now() + hold_ms
        item = HeldOutcome(outcome, until, frozenset(a.experiment_id for a in attributed))
        held = CustomerState(state.exposures, state.purchases, (*state.held, item))
        return OutcomeResult(held, tuple(attributed), tuple(unattributed), until, orphan=not state.exposures)
    counted = CustomerState(state.exposures, state.purchases + 1, state.held)
    return OutcomeResult(counted, tuple(attributed), tuple(unattributed), None, orphan=False)


class ExpiryResult(NamedTuple):
    """The customer's new state, how many held outcomes expired, and how many of those no experiment got."""

    state: CustomerState
    expired: int
    orphans: int


def expire_held(state: CustomerState, now_ms: int) -> ExpiryResult:
    """End the holds due by `now_ms`: those outcomes now count only as pre-period purchases."""
    expired: Sequence[HeldOutcome] = [item for item in state.held if item.expires_at <= now_ms]
    if not expired:
        return ExpiryResult(state, 0, 0)
    kept = tuple(item for item in state.held if item.expires_at > now_ms)
    orphans = sum(1 for item in expired if not item.attributed_to)
    return ExpiryResult(CustomerState(state.exposures, state.purchases + len(expired), kept), len(expired), orphans)
