"""Traffic with a computable answer, and a read_committed count of what went missing, for the fault tests.

A fault test (kill -9 a process, stop and restart the job, kill the broker, rescale) needs two things: input whose
correct output is known exactly, and a count of how the real output differs from it. This module gives both.

**The plan** (`plan_traffic`, pure and deterministic given its arguments): `customers` customers split into
`rounds` cohorts. Round 0 holds cohort 0's first sessions; round r holds cohort r's first sessions (new customers)
and a session of about `returning` of the earlier customers (returning ones). After the rounds, each customer makes
one purchase: inside every experiment's attribution window after their first session, except `late_purchases` of
them, which buy just after the longest window closes. Ids are readable and unique to the plan's `tag`:
customer `{tag}-c000042`, session `{tag}-c000042-s1` (round 1), purchase `{tag}-c000042-o`.

What the job must write follows from its rules (`flink_pipeline.functions`), recomputed here with the same pure
functions:

- one `assignments` record per (session, running experiment) whose traffic holds the customer
  (`experiment.core.assignment.assign` is not None), with that variant; the customer's first session (round order, one
  partition per key) is their first exposure, so its `event_ts` is the exposure time for good;
- one `attributed-outcomes` record per (purchase, running experiment) whose traffic holds the customer and whose
  window `[first exposure, first exposure + attribution_window_s]` holds the purchase time.

**The count** (`count_results`): a read_committed consumer reads both topics from the start until every expected
record has arrived and no record has arrived for `quiet_s` (or `timeout_s` passes), then `count_records` compares
per key. Records of other customers (warm-up probes, other plans) are ignored. A test asserts `count.exact`
(or calls `count.assert_exact()`, whose message names the counts and a few offending keys).

Sending: `produce_round` / `produce_purchases` write one part of the plan (keys = customer ids); tests that
interleave other records use `TrafficPlan.session_messages` / `purchase_messages` themselves. `job_output` renders
what the job would write for the plan (with a made-up score), for tests of the collector that need no job.

`fault_scale()` reads `ABFLOW_FAULT_SCALE` (default 1.0), so CI can run every fault test smaller.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from experiment.core import events
from experiment.core.assignment import assign, bucket
from experiment.core.definition import ExperimentDefinition
from experiment.runtime.config import KafkaSettings
from experiment.stats.sufficient import to_cents
from tests.helpers.flink_job import produce, read_until, session_raw

__all__ = [
    "SCALE_ENV",
    "T0",
    "JobHealth",
    "JobOutput",
    "PlannedPurchase",
    "PlannedSession",
    "TrafficCount",
    "TrafficPlan",
    "VariantTotals",
    "count_records",
    "count_results",
    "fault_scale",
    "job_health",
    "plan_traffic",
    "produce_purchases",
    "produce_round",
    "scaled",
]

#: Environment variable that scales every fault test's size (1.0 = the default size; CI may use 0.2).
SCALE_ENV = "ABFLOW_FAULT_SCALE"
#: Event time of the plan's first session (2023-11-14), unless `plan_traffic(start_ms=...)` says otherwise.
T0 = 1_700_000_000_000
_ROUND_GAP_MS = 60_000
_PURCHASE_DELAY_MS = 30_000
_LATE_BY_MS = 60_000
_EXAMPLES = 5


def fault_scale() -> float:
    """The size factor from `ABFLOW_FAULT_SCALE` (default 1.0; must be a positive number)."""
    text = os.environ.get(SCALE_ENV, "").strip()
    if not text:
        return 1.0
    try:
        scale = float(text)
    except ValueError:
        raise ValueError(f"{SCALE_ENV} must be a positive number, got {text!r}") from None
    if not scale > 0:
        raise ValueError(f"{SCALE_ENV} must be a positive number, got {text!r}")
    return scale


def scaled(n: int, minimum: int = 1) -> int:
    """`n` times `fault_scale()`, rounded, at least `minimum`."""
    return max(minimum, round(n * fault_scale()))


@dataclass(frozen=True)
class PlannedSession:
    """One valid `sessions` message of the plan."""

    event_id: str
    customer_id: str
    ts: int
    round: int
    features: Mapping[str, float]

    def message(self) -> tuple[bytes, bytes]:
        """(key, value) as the website sends it: key = customer id."""
        return session_raw(self.event_id, self.customer_id, self.ts, dict(self.features))


@dataclass(frozen=True)
class PlannedPurchase:
    """One valid `outcomes` message (a purchase) of the plan."""

    event_id: str
    customer_id: str
    ts: int
    category: str
    revenue: float

    def message(self) -> tuple[bytes, bytes]:
        """(key, value): key = customer id."""
        value = events.outcome_json(self.event_id, self.customer_id, self.ts, self.category, self.revenue)
        return self.customer_id.encode(), value.encode()

    def outcome(self) -> events.Outcome:
        """The parsed form, as the job sees it."""
        return events.Outcome(self.event_id, self.customer_id, self.ts, "purchase", self.category, self.revenue)


@dataclass(frozen=True)
class VariantTotals:
    """What a correct results store reports for one variant: users, converted users and revenue in cents."""

    users: int = 0
    conversions: int = 0
    revenue_cents: int = 0


@dataclass(frozen=True)
class JobOutput:
    """The records the job writes for a plan, in its output format (`experiment.core.events` builders)."""

    assignments: tuple[dict[str, Any], ...]
    attributed_outcomes: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class TrafficPlan:
    """Sessions in rounds, one purchase per customer, and exactly what the job must write for them."""

    tag: str
    experiments: tuple[ExperimentDefinition, ...]
    rounds: tuple[tuple[PlannedSession, ...], ...]
    purchases: tuple[PlannedPurchase, ...]
    #: (session event_id, experiment_id) -> variant, for every assignment the job must write.
    expected_assignments: Mapping[tuple[str, str], str]
    #: (purchase event_id, experiment_id) -> variant, for every attributed outcome the job must write.
    expected_attributions: Mapping[tuple[str, str], str]
    #: (customer_id, experiment_id) -> event time of the first exposure, for every in-traffic customer.
    first_exposure_ts: Mapping[tuple[str, str], int]

    @property
    def customer_prefix(self) -> str:
        """Every customer id of the plan starts with this (and no other plan's with a different tag does)."""
        return f"{self.tag}-c"

    @property
    def sessions(self) -> tuple[PlannedSession, ...]:
        """All sessions, round by round."""
        return tuple(s for round_sessions in self.rounds for s in round_sessions)

    def session_messages(self, round_index: int) -> list[tuple[bytes | None, bytes]]:
        """The (key, value) messages of one round, in order."""
        return [s.message() for s in self.rounds[round_index]]

    def purchase_messages(self) -> list[tuple[bytes | None, bytes]]:
        """The (key, value) messages of every purchase."""
        return [p.message() for p in self.purchases]

    def variant_totals(self, experiment_id: str) -> dict[str, VariantTotals]:
        """Per variant of one experiment: in-traffic customers, those with an attributed purchase, their revenue."""
        users = Counter(
            self._variant(experiment_id, customer)
            for (customer, exp_id) in self.first_exposure_ts
            if exp_id == experiment_id
        )
        conversions: Counter[str] = Counter()
        revenue: Counter[str] = Counter()
        by_id = {p.event_id: p for p in self.purchases}
        for (purchase_id, exp_id), variant in self.expected_attributions.items():
            if exp_id == experiment_id:
                conversions[variant] += 1  # one purchase per customer: one conversion
                revenue[variant] += to_cents(by_id[purchase_id].revenue)
        definition = self._definition(experiment_id)
        return {v.name: VariantTotals(users[v.name], conversions[v.name], revenue[v.name]) for v in definition.variants}

    def job_output(self, decided_after_ms: int = 5) -> JobOutput:
        """What the job writes for this plan, field for field (`experiment.core.events` builders, keys sorted).

        Scores are made up (the bucket of the event id, in [0, 1)) since no model runs; the decision follows the
        threshold like the job's. `pre_period_purchases` is made up too (0). `decided_ts` is the event time plus
        `decided_after_ms`.
        """
        assignments = []
        exposed: set[tuple[str, str]] = set()
        for session in self.sessions:
            for definition in self._running():
                variant = self.expected_assignments.get((session.event_id, definition.id))
                if variant is None:
                    continue
                key = (session.customer_id, definition.id)
                is_first = key not in exposed
                exposed.add(key)
                treated = variant != definition.control
                score = bucket(session.event_id) / 10_000 if treated else None
                record = events.assignment_record(
                    event_id=session.event_id,
                    experiment_id=definition.id,
                    experiment_version=definition.version,
                    customer_id=session.customer_id,
                    variant=variant,
                    score=score,
                    decision="show" if score is not None and score >= definition.threshold else "hide",
                    model_version=definition.model.model_version if treated else None,
                    first_exposure=is_first,
                    event_ts=session.ts,
                    decided_ts=session.ts + decided_after_ms,
                    pre_period_purchases=0,
                )
                assignments.append(record)
        attributed = []
        for purchase in self.purchases:
            for definition in self._running():
                variant = self.expected_attributions.get((purchase.event_id, definition.id))
                if variant is None:
                    continue
                record = events.attributed_outcome_record(
                    experiment_id=definition.id,
                    customer_id=purchase.customer_id,
                    variant=variant,
                    outcome=purchase.outcome(),
                    exposure_ts=self.first_exposure_ts[(purchase.customer_id, definition.id)],
                )
                attributed.append(record)
        return JobOutput(tuple(assignments), tuple(attributed))

    def _running(self) -> tuple[ExperimentDefinition, ...]:
        return tuple(d for d in self.experiments if d.status == "running")

    def _definition(self, experiment_id: str) -> ExperimentDefinition:
        for definition in self.experiments:
            if definition.id == experiment_id:
                return definition
        raise KeyError(f"experiment {experiment_id!r} is not in the plan")

    def _variant(self, experiment_id: str, customer_id: str) -> str | None:
        d = self._definition(experiment_id)
        return assign(d.salt, customer_id, d.traffic, d.weights())


def _features(rng: random.Random, names: Sequence[str]) -> dict[str, float]:
    man = float(rng.random() < 0.5)
    values: dict[str, float] = {}
    for name in names:
        if name == "age":
            values[name] = float(rng.randint(18, 80))
        elif name == "man":
            values[name] = man
        elif name == "woman":
            values[name] = 1.0 - man
        else:
            values[name] = float(rng.choice((0, 0, 0, 1, 1, 2, 3, 5)))
    return values


def plan_traffic(
    experiments: Sequence[ExperimentDefinition],
    *,
    customers: int,
    feature_names: Sequence[str],
    rounds: int = 3,
    tag: str = "ft",
    seed: int = 0,
    returning: float = 0.5,
    late_purchases: float = 0.1,
    start_ms: int = T0,
    purchase_category: str = "cat61",
) -> TrafficPlan:
    """The traffic of the module docstring and its expected output (pure; same arguments, same plan).

    `experiments`: the definitions the job runs (only `running` ones produce expectations). `feature_names`:
    the job's session layout (`events.default_feature_names(categories)`). Session times: round r at
    `start_ms + r * 60 s`, plus the customer's index in ms (unique, increasing per customer).
    """
    if customers < rounds or rounds < 1:
        raise ValueError(f"need rounds >= 1 and customers >= rounds, got customers={customers} rounds={rounds}")
    if not (0.0 <= returning <= 1.0 and 0.0 <= late_purchases <= 1.0):
        raise ValueError(f"returning and late_purchases are fractions, got {returning} and {late_purchases}")
    rng = random.Random(f"{tag}:{seed}")
    ids = [f"{tag}-c{i:06d}" for i in range(customers)]
    features = [_features(rng, feature_names) for _ in range(customers)]
    cohort_of = [i * rounds // customers for i in range(customers)]
    round_sessions: list[list[PlannedSession]] = [[] for _ in range(rounds)]
    last_ts = [0] * customers
    first_ts = [0] * customers
    for r in range(rounds):
        for i in range(customers):
            new = cohort_of[i] == r
            if not new and not (cohort_of[i] < r and rng.random() < returning):
                continue
            ts = start_ms + r * _ROUND_GAP_MS + i
            if new:
                first_ts[i] = ts
            last_ts[i] = ts
            round_sessions[r].append(PlannedSession(f"{ids[i]}-s{r}", ids[i], ts, r, features[i]))

    running = [d for d in experiments if d.status == "running"]
    longest_window_ms = max((d.attribution_window_s * 1000 for d in running), default=0)
    purchases = []
    for i in range(customers):
        if rng.random() < late_purchases:
            ts = first_ts[i] + longest_window_ms + _LATE_BY_MS
        else:
            ts = last_ts[i] + _PURCHASE_DELAY_MS
        revenue = round(rng.uniform(1.0, 250.0), 2)
        purchases.append(PlannedPurchase(f"{ids[i]}-o", ids[i], ts, purchase_category, revenue))

    expected_assignments: dict[tuple[str, str], str] = {}
    expected_attributions: dict[tuple[str, str], str] = {}
    exposure: dict[tuple[str, str], int] = {}
    for d in running:
        weights = d.weights()
        window_ms = d.attribution_window_s * 1000
        variant_of = [assign(d.salt, cid, d.traffic, weights) for cid in ids]
        for sessions in round_sessions:
            for s in sessions:
                variant = variant_of[int(s.customer_id.rsplit("-c", 1)[1])]
                if variant is not None:
                    expected_assignments[(s.event_id, d.id)] = variant
        for i, purchase in enumerate(purchases):
            variant = variant_of[i]
            if variant is None:
                continue
            exposure[(ids[i], d.id)] = first_ts[i]
            if first_ts[i] <= purchase.ts <= first_ts[i] + window_ms:
                expected_attributions[(purchase.event_id, d.id)] = variant
    return TrafficPlan(
        tag=tag,
        experiments=tuple(experiments),
        rounds=tuple(tuple(sessions) for sessions in round_sessions),
        purchases=tuple(purchases),
        expected_assignments=expected_assignments,
        expected_attributions=expected_attributions,
        first_exposure_ts=exposure,
    )


def produce_round(kafka: KafkaSettings, plan: TrafficPlan, round_index: int) -> int:
    """Send one round's sessions to the test's `sessions` topic; return how many."""
    messages = plan.session_messages(round_index)
    produce(kafka, "sessions", messages)
    return len(messages)


def produce_purchases(kafka: KafkaSettings, plan: TrafficPlan) -> int:
    """Send every purchase to the test's `outcomes` topic; return how many."""
    messages = plan.purchase_messages()
    produce(kafka, "outcomes", messages)
    return len(messages)


@dataclass(frozen=True)
class TrafficCount:
    """How the job's committed output differs from the plan; every count is 0 when nothing was lost.

    Assignments are counted per (session event_id, experiment_id), attributed outcomes per (purchase event_id,
    experiment_id): `lost_*` expected keys never seen, `duplicated_*` copies beyond the first, `unexpected_*` keys
    of the plan's customers that the plan does not expect (e.g. an out-of-traffic customer assigned, a purchase
    outside the window attributed). `variant_changes`: (customer, experiment) pairs with any record, assignment or
    attribution, whose variant is not the pure assignment function's. `first_exposure_changes`: (customer,
    experiment) pairs whose records do not name exactly one first-exposure time, the first session's: a
    `first_exposure` flag on another session or none at all, or an attribution whose `seconds_since_exposure`
    measures from another time (a job that lost its state starts customers over).
    """

    expected_assignments: int
    assignments_seen: int
    lost_assignments: int
    duplicated_assignments: int
    unexpected_assignments: int
    expected_attributions: int
    attributions_seen: int
    lost_attributions: int
    duplicated_attributions: int
    unexpected_attributions: int
    variant_changes: int
    first_exposure_changes: int
    #: Every expected key was seen (and then nothing new for the quiet period) before the timeout.
    complete: bool = True
    elapsed_s: float = 0.0
    #: A few offending keys per nonzero count, for the failure message.
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def problems(self) -> dict[str, int]:
        """The nonzero counts by name (empty when nothing was lost, duplicated or changed)."""
        names = (
            "lost_assignments",
            "duplicated_assignments",
            "unexpected_assignments",
            "lost_attributions",
            "duplicated_attributions",
            "unexpected_attributions",
            "variant_changes",
            "first_exposure_changes",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name)}

    @property
    def exact(self) -> bool:
        """Nothing lost, duplicated, unexpected or changed."""
        return not self.problems

    def assert_exact(self) -> None:
        """Raise `AssertionError` naming every nonzero count and a few keys of each."""
        if not self.exact:
            raise AssertionError(f"the job's output differs from the plan: {self.summary()}")

    def summary(self) -> str:
        """One line: expected/seen counts, problems, examples."""
        return (
            f"assignments {self.assignments_seen}/{self.expected_assignments}, "
            f"attributions {self.attributions_seen}/{self.expected_attributions}, complete={self.complete}, "
            f"elapsed {self.elapsed_s:.1f}s, problems {self.problems}, examples {dict(self.examples)}"
        )


def _is_plan_record(plan: TrafficPlan, record: Mapping[str, Any]) -> bool:
    return str(record.get("customer_id", "")).startswith(plan.customer_prefix)


def count_records(
    plan: TrafficPlan,
    assignments: Sequence[Mapping[str, Any]],
    attributed_outcomes: Sequence[Mapping[str, Any]],
    *,
    complete: bool = True,
    elapsed_s: float = 0.0,
) -> TrafficCount:
    """Compare output records (parsed JSON of `assignments` / `attributed-outcomes`) with the plan (pure)."""
    mine_a = [r for r in assignments if _is_plan_record(plan, r)]
    mine_o = [r for r in attributed_outcomes if _is_plan_record(plan, r)]
    seen_a = Counter((str(r.get("event_id")), str(r.get("experiment_id"))) for r in mine_a)
    seen_o = Counter((str(r.get("outcome_event_id")), str(r.get("experiment_id"))) for r in mine_o)
    examples: dict[str, list[str]] = defaultdict(list)

    def note(name: str, key: object) -> None:
        if len(examples[name]) < _EXAMPLES:
            examples[name].append(str(key))

    def compare(kind: str, seen: Counter[tuple[str, str]], expected: Mapping[tuple[str, str], str]) -> list[int]:
        lost = [k for k in expected if k not in seen]
        duplicated = {k: n - 1 for k, n in seen.items() if n > 1}
        unexpected = [k for k in seen if k not in expected]
        for k in lost:
            note(f"lost_{kind}", k)
        for k in duplicated:
            note(f"duplicated_{kind}", k)
        for k in unexpected:
            note(f"unexpected_{kind}", k)
        return [len(lost), sum(duplicated.values()), len(unexpected)]

    lost_a, dup_a, unexpected_a = compare("assignments", seen_a, plan.expected_assignments)
    lost_o, dup_o, unexpected_o = compare("attributions", seen_o, plan.expected_attributions)

    changed_variant: set[tuple[str, str]] = set()
    first_times: dict[tuple[str, str], set[int]] = defaultdict(set)
    exposure_from: dict[tuple[str, str], set[int]] = defaultdict(set)
    by_experiment = {d.id: d for d in plan.experiments}
    for r in (*mine_a, *mine_o):
        pair = (str(r.get("customer_id")), str(r.get("experiment_id")))
        d = by_experiment.get(pair[1])
        want = None if d is None else assign(d.salt, pair[0], d.traffic, d.weights())
        if r.get("variant") != want:
            changed_variant.add(pair)
    for r in mine_a:
        if r.get("first_exposure") is True:
            first_times[(str(r["customer_id"]), str(r["experiment_id"]))].add(int(r["event_ts"]))
    for r in mine_o:
        # seconds_since_exposure = (ts - exposure_ts) / 1000 with integer ms: this recovers the exposure time.
        exposure = int(r["ts"]) - round(float(r["seconds_since_exposure"]) * 1000)
        exposure_from[(str(r["customer_id"]), str(r["experiment_id"]))].add(exposure)
    changed_first: set[tuple[str, str]] = set()
    customers_seen = {(str(r.get("customer_id")), str(r.get("experiment_id"))) for r in mine_a}
    for pair, ts in plan.first_exposure_ts.items():
        if (pair in customers_seen or pair in first_times) and first_times.get(pair) != {ts}:
            changed_first.add(pair)
        if exposure_from.get(pair, {ts}) != {ts}:
            changed_first.add(pair)
    for pair in sorted(changed_variant):
        note("variant_changes", pair)
    for pair in sorted(changed_first):
        note("first_exposure_changes", (pair, sorted(first_times.get(pair, ())), plan.first_exposure_ts.get(pair)))
    return TrafficCount(
        expected_assignments=len(plan.expected_assignments),
        assignments_seen=len(mine_a),
        lost_assignments=lost_a,
        duplicated_assignments=dup_a,
        unexpected_assignments=unexpected_a,
        expected_attributions=len(plan.expected_attributions),
        attributions_seen=len(mine_o),
        lost_attributions=lost_o,
        duplicated_attributions=dup_o,
        unexpected_attributions=unexpected_o,
        variant_changes=len(changed_variant),
        first_exposure_changes=len(changed_first),
        complete=complete,
        elapsed_s=elapsed_s,
        examples={name: tuple(keys) for name, keys in examples.items()},
    )


class _Progress:
    """The stop rule of `count_results`, updated incrementally as `read_until` hands over more records."""

    def __init__(self, plan: TrafficPlan, quiet_s: float) -> None:
        self.plan = plan
        self.quiet_s = quiet_s
        self.read = {"assignments": 0, "attributed-outcomes": 0}
        self.missing_a = set(plan.expected_assignments)
        self.missing_o = set(plan.expected_attributions)
        self.total = 0
        self.last_change = time.monotonic()

    def __call__(self, records: dict[str, list[dict]]) -> bool:
        total = sum(len(v) for v in records.values())
        if total != self.total:
            self.total = total
            self.last_change = time.monotonic()
        for topic, missing, id_field in (
            ("assignments", self.missing_a, "event_id"),
            ("attributed-outcomes", self.missing_o, "outcome_event_id"),
        ):
            new = records[topic][self.read[topic] :]
            self.read[topic] += len(new)
            for r in new:
                missing.discard((str(r.get(id_field)), str(r.get("experiment_id"))))
        return self.complete and time.monotonic() - self.last_change >= self.quiet_s

    @property
    def complete(self) -> bool:
        return not self.missing_a and not self.missing_o


def count_results(
    kafka: KafkaSettings, plan: TrafficPlan, *, timeout_s: float = 180.0, quiet_s: float = 5.0
) -> TrafficCount:
    """Read `assignments` and `attributed-outcomes` from the start with read_committed and count against the plan.

    Stops once every expected record has been seen and nothing new arrived for `quiet_s` (choose it longer than
    the job's checkpoint interval, so that late duplicates would be seen), or after `timeout_s` (then
    `complete` is False and the lost records are counted). Lost records therefore cost the whole timeout.
    """
    started = time.monotonic()
    progress = _Progress(plan, quiet_s)
    records = read_until(kafka, ["assignments", "attributed-outcomes"], progress, timeout_s=timeout_s)
    return count_records(
        plan,
        records["assignments"],
        records["attributed-outcomes"],
        complete=progress.complete,
        elapsed_s=time.monotonic() - started,
    )


@dataclass(frozen=True)
class JobHealth:
    """What a MiniCluster says about a job: its status, how often its tasks restarted, the last failure."""

    status: str
    #: The highest execution attempt number over the job's tasks: 0 when no task ever failed over.
    restarts: int
    #: The last failure's stack trace, or None when nothing ever failed.
    failure: str | None

    @property
    def healthy(self) -> bool:
        """Running and never restarted."""
        return self.status == "RUNNING" and self.restarts == 0 and self.failure is None


def job_health(client: Any) -> JobHealth:
    """Status, restart count and last failure of a job started by `tests.helpers.flink_job.running_job`.

    Reads the MiniCluster's execution graph through the PyFlink `JobClient` (py4j): the local job client keeps
    its `miniCluster` in a private field. Only for in-process MiniCluster jobs; a job in another process has to be
    asked over its REST API instead.
    """
    j_client = client._j_job_client
    field_ = j_client.getClass().getDeclaredField("miniCluster")
    field_.setAccessible(True)
    mini_cluster = field_.get(j_client)
    graph = mini_cluster.getExecutionGraph(j_client.getJobID()).get()
    restarts = 0
    vertices = graph.getAllExecutionVertices().iterator()
    while vertices.hasNext():
        restarts = max(restarts, vertices.next().getCurrentExecutionAttempt().getAttemptNumber())
    failure = graph.getFailureInfo()
    return JobHealth(
        status=str(graph.getState().name()),
        restarts=restarts,
        failure=None if failure is None else str(failure.getExceptionAsString()),
    )
