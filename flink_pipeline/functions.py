"""The job's Python function: validate raw Kafka records, decide per customer, attribute outcomes.

`DecideFunction` is a `KeyedBroadcastProcessFunction`: its keyed input is the raw `sessions`/`outcomes` records
(`Row(raw, topic, partition, offset)`, keyed in Java by the Kafka message key = customer id), its broadcast input
the experiment definitions. All Python work happens in this one operator, so a record crosses the Java/Python
boundary once in and once out (the speed floor depends on it). Per record it

- validates with `experiment.core.events`; a bad record (any reason, including an unexpected exception) becomes a
  `dead-letter` record with its source topic/partition/offset, the whole raw value and the exact reason; the job
  never fails on a record;
- decides, attributes and holds with the pure rules of `experiment.core.decisions` (who is assigned, scored and
  shown; first exposures; attribution windows; held outcomes and their expiry; pre-period purchases), on the
  customer's `CustomerState`. This function is their adapter: parse, read state, call the rules, then write
  state, register timers, count metrics and emit one `assignments` record per (session, running experiment) and
  one `attributed-outcomes` record per attribution. Scorers are verified PMML scorers, one per model of every
  scored arm (champion vs challenger: each model arm has its own); an arm is scored by its own model only.

Speed (see docs/pipeline.md and BENCHMARKS.md): in thread mode every state access and every Flink metric call is
a JNI call, so each customer's state is ONE pickled value (read at most once per record, written only
when it changes) behind a write-through cache, and metrics are counted in Python and flushed to Flink counters
once a second. The cache is safe because a key belongs to exactly one subtask and only this function writes its
state; after a restore or rescale `open()` starts with an empty cache and reads state again.

Outputs are `Row(topic, key, value)` so one exactly-once Kafka sink writes all the output topics. Besides the
three above, the first session that meets an experiment's arm model version in a task writes one
`experiment-health` record per (experiment, model version): `model_unusable` with the reason (the experiment then
assigns nobody, in any arm, when any of its arm models is unusable), or `model_ready`, so that users see a broken
model where they look (`experiment show`, dashboard, reports) and a repaired one clears it.
Resources (state handles, metric groups, scorers) are acquired in `open()` or, for a model version first seen on
the broadcast stream, when its definition arrives; never per record and never in `__init__`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from pyflink.common import Row, Time, Types
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor

from experiment.core import events
from experiment.core.decisions import (
    ArmScorers,
    Assigned,
    Attribution,
    CustomerState,
    Exposed,
    Scorer,
    Skipped,
    arm_scorers,
    decide_session,
    expire_held,
    record_outcome,
    record_session,
)
from experiment.core.segments import segments_of
from experiment.core.view import ArmSpec, ExperimentView, parse_definition
from experiment.runtime.config import KafkaSettings

__all__ = ["EXPERIMENTS_STATE", "OUTPUT_TYPE", "RAW_TYPE", "DecideFunction", "Topics"]

logger = logging.getLogger(__name__)

#: Row(topic, key, value): what the Kafka sink writes (value is the JSON text of the record).
OUTPUT_TYPE = Types.ROW_NAMED(["topic", "k", "v"], [Types.STRING(), Types.STRING(), Types.STRING()])
#: Row(raw, src_topic, src_partition, src_offset): one Kafka record as the table source delivers it.
RAW_TYPE = Types.ROW_NAMED(
    ["raw", "src_topic", "src_partition", "src_offset"],
    [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(), Types.INT(), Types.LONG()],
)
#: Broadcast state: experiment id -> latest definition JSON (the JSON, so a restored job re-validates it).
EXPERIMENTS_STATE = MapStateDescriptor("experiments", Types.STRING(), Types.STRING())

#: Per-experiment counters (Flink metric `abflow.experiment.<id>.<name>`); variants add `assigned_<variant>`.
EXPERIMENT_COUNTERS = (
    "sessions",
    "not_in_traffic",
    "sessions_skipped_paused",
    "sessions_skipped_stopped",
    "sessions_skipped_draft",
    "sessions_skipped_archived",
    "scored",
    "shown",
    "first_exposures",
    "outcomes_attributed",
    "late_outcomes",
    "outcomes_outside_window",
    "outcomes_before_exposure",
    "model_unusable",
)
#: Job-wide counters (Flink metric `abflow.<name>`).
JOB_COUNTERS = (
    "sessions",
    "outcomes",
    "dead_lettered_sessions",
    "dead_lettered_outcomes",
    "dead_lettered_other",
    "sessions_no_running_experiment",
    "orphan_outcomes_held",
    "orphan_outcomes_expired",
    "definitions_applied",
    "definitions_rejected",
)
_CACHE_LIMIT = 200_000
_FLUSH_EVERY_S = 1.0


def _to_json(record: dict[str, Any]) -> str:
    """The output record as compact JSON with sorted keys, like `events.to_json`, only faster (orjson).

    orjson writes the same objects (floats in shortest round-trip form, e.g. `1e-5` where `json` writes `1e-05`:
    the same number). It would write NaN as null where `json` refuses it; callers never pass a non-finite float
    (scores are checked before, revenues are validated on input).
    """
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class Topics:
    """Physical topic names (prefix applied) of the job's inputs and outputs."""

    sessions: str
    outcomes: str
    experiments: str
    assignments: str
    attributed_outcomes: str
    dead_letter: str
    experiment_health: str


class _Metrics:
    """Counts in Python, flushed to Flink counters once a second (a Flink counter call costs a JNI hop)."""

    def __init__(self, group: Any) -> None:
        self._group = group
        self._job_counters = {name: group.counter(name) for name in JOB_COUNTERS}
        self._exp_groups: dict[str, Any] = {}
        self._exp_counters: dict[tuple[str, str], Any] = {}
        self.pending: Counter[tuple[str, str]] = Counter()
        self.totals: Counter[tuple[str, str]] = Counter()
        self._last_flush = time.monotonic()
        self._last_log = time.monotonic()

    def job(self, name: str, n: int = 1) -> None:
        self.pending[("", name)] += n

    def exp(self, exp_id: str, name: str, n: int = 1) -> None:
        self.pending[(exp_id, name)] += n

    def maybe_flush(self, log_every_s: float) -> None:
        now = time.monotonic()
        if now - self._last_flush >= _FLUSH_EVERY_S:
            self.flush()
        if now - self._last_log >= log_every_s:
            self._last_log = now
            self.log()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        for (exp_id, name), n in self.pending.items():
            self._counter(exp_id, name).inc(n)
        self.totals.update(self.pending)
        self.pending.clear()

    def log(self) -> None:
        by_exp: dict[str, list[str]] = {}
        for (exp_id, name), n in sorted(self.totals.items()):
            by_exp.setdefault(exp_id, []).append(f"{name}={n}")
        for exp_id, parts in by_exp.items():
            if exp_id:
                logger.info("experiment metrics experiment_id=%s %s", exp_id, " ".join(parts))
            else:
                logger.info("job metrics %s", " ".join(parts))

    def _counter(self, exp_id: str, name: str) -> Any:
        if not exp_id:
            counter = self._job_counters.get(name)
            if counter is None:
                counter = self._job_counters[name] = self._group.counter(name)
            return counter
        counter = self._exp_counters.get((exp_id, name))
        if counter is None:
            group = self._exp_groups.get(exp_id)
            if group is None:
                group = self._exp_groups[exp_id] = self._group.add_group("experiment", exp_id)
            counter = self._exp_counters[(exp_id, name)] = group.counter(name)
        return counter


class _ArmModels(NamedTuple):
    """One view's arm models, resolved once per view object (not per session)."""

    view: ExperimentView
    #: The scorer of each scored arm, or None when any arm's model is unusable (the experiment assigns nobody).
    scorers: ArmScorers | None
    #: One entry per (experiment id, model version) of its arms: the `experiment-health` key, an arm with that
    #: model (an unusable one if any) and whether its model is usable.
    health: tuple[tuple[tuple[str, str], ArmSpec, bool], ...]


class DecideFunction(KeyedBroadcastProcessFunction):
    """Per-customer decisions and outcome attribution, driven by the broadcast experiment definitions."""

    def __init__(
        self,
        topics: Topics,
        *,
        feature_names: tuple[str, ...],
        max_bytes: int,
        hold_ms: int,
        state_ttl_ms: int,
        reference_rows: str | None,
        scorer_fallback: bool,
        log_every_s: float = 30.0,
        kafka: KafkaSettings | None = None,
        snapshot_timeout_s: float = 30.0,
    ) -> None:
        """`kafka` (plain settings, pickled with the function): where `open()` reads the current definitions.

        None skips that read; the view then starts empty and only the broadcast stream fills it.
        """
        self._topics = topics
        self._feature_names = feature_names
        self._max_bytes = max_bytes
        self._hold_ms = hold_ms
        self._state_ttl_ms = state_ttl_ms
        self._reference_rows = reference_rows
        self._scorer_fallback = scorer_fallback
        self._log_every_s = log_every_s
        self._kafka = kafka
        self._snapshot_timeout_s = snapshot_timeout_s
        # Runtime-only attributes, filled in open().
        self._state: Any = None
        self._cache: dict[str, CustomerState] = {}
        self._views: dict[str, ExperimentView] = {}
        self._views_loaded = False
        # Keyed by (model version, PMML path): two experiments naming one version but different files must each
        # have their own file checked, or a tampered copy would borrow the verified scorer of the good one.
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._broken_models: dict[tuple[str, str], str] = {}
        #: Experiment id -> its arm models, for the view object they were resolved for (`_arm_models_of`).
        self._arm_models: dict[str, _ArmModels] = {}
        #: (experiment id, model version) pairs whose health this task has written to `experiment-health`.
        self._health_reported: set[tuple[str, str]] = set()
        self._metrics: _Metrics | None = None
        self._dead_counter_names: dict[str, str] = {}

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def open(self, runtime_context: RuntimeContext) -> None:
        """Create the keyed state (with TTL), the cache and the metric groups; read the current definitions."""
        ttl = (
            StateTtlConfig.new_builder(Time.milliseconds(self._state_ttl_ms))
            .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            .build()
        )
        descriptor = ValueStateDescriptor("customer", Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(ttl)
        self._state = runtime_context.get_state(descriptor)
        self._cache = {}
        self._views = {}
        self._views_loaded = False
        self._arm_models = {}
        self._health_reported = set()
        self._metrics = _Metrics(runtime_context.get_metrics_group().add_group("abflow"))
        self._dead_counter_names = {
            self._topics.sessions: "dead_lettered_sessions",
            self._topics.outcomes: "dead_lettered_outcomes",
        }
        self._load_snapshot()

    def _load_snapshot(self) -> None:
        """Start from the definitions on the `experiments` topic now, so no session races the broadcast stream.

        Why: the keyed and the broadcast inputs are read concurrently, and on a fresh start sessions would otherwise
        be processed before the first definitions arrive (and counted as `sessions_no_running_experiment`). The
        snapshot is only the initial view: the broadcast stream still delivers every definition (from the earliest
        offset) and, like restored broadcast state, is merged by the highest version per experiment id. A failed
        read is logged and the job goes on with the broadcast stream alone.
        """
        if self._kafka is None:
            return
        from experiment.kafka.control_plane import read_snapshot

        assert self._metrics is not None
        started = time.monotonic()
        try:
            snapshot = read_snapshot(self._kafka, timeout_s=self._snapshot_timeout_s)
        except Exception as exc:  # the broadcast stream still delivers the definitions
            logger.error("experiments snapshot unreadable; waiting for the broadcast stream reason=%s", exc)
            return
        for definition in snapshot.definitions.values():
            try:
                view = parse_definition(definition.to_json())
            except Exception as exc:  # a bad definition must never fail the job
                logger.error("snapshot definition rejected experiment_id=%s reason=%s", definition.id, exc)
                continue
            if self._merge(view):
                self._metrics.job("definitions_from_snapshot")
        logger.info(
            "experiments snapshot read definitions=%d running=%d skipped=%d seconds=%.2f",
            len(snapshot.definitions),
            sum(1 for view in self._views.values() if view.is_running),
            snapshot.skipped,
            time.monotonic() - started,
        )
        for view in list(self._views.values()):
            if view.is_running:
                self._arm_models_of(view)  # load and verify every arm's model now, not on the first session

    def _merge(self, view: ExperimentView) -> bool:
        """Keep `view` unless a newer version of the experiment is known (snapshot and restored state)."""
        current = self._views.get(view.id)
        if current is not None and current.version > view.version:
            return False
        self._views[view.id] = view
        return True

    def close(self) -> None:
        """Flush the last counts so that a finished bounded run reports everything."""
        if self._metrics is not None:
            self._metrics.flush()
            self._metrics.log()

    # -- broadcast side: experiment definitions ----------------------------------------------------------------

    def process_broadcast_element(self, value: Row, ctx: KeyedBroadcastProcessFunction.Context) -> None:
        """Store the newest version of a definition; malformed or stale values are counted and skipped."""
        raw, topic, partition, offset = value[0], value[1], value[2], value[3]
        where = f"topic={topic} partition={partition} offset={offset}"
        assert self._metrics is not None
        if raw is None:
            self._metrics.job("definitions_rejected")
            logger.warning("experiment tombstone skipped %s", where)
            return
        try:
            text = bytes(raw).decode("utf-8")
            view = parse_definition(text)
        except Exception as exc:  # a bad definition must never fail the job
            self._metrics.job("definitions_rejected")
            logger.error("experiment definition rejected %s reason=%s", where, exc)
            return
        self._ensure_views(ctx)
        current = self._views.get(view.id)
        if current is not None and current.version > view.version:
            # Normal at start-up: the topic's history replays versions older than the snapshot's.
            logger.info(
                "stale experiment definition skipped experiment_id=%s version=%d current=%d %s",
                view.id,
                view.version,
                current.version,
                where,
            )
            return
        ctx.get_broadcast_state(EXPERIMENTS_STATE).put(view.id, text)
        self._views[view.id] = view
        self._metrics.job("definitions_applied")
        logger.info(
            "experiment definition applied experiment_id=%s version=%d status=%s traffic=%s weights=%s",
            view.id,
            view.version,
            view.status,
            view.traffic,
            view.weights,
        )
        if view.is_running:
            self._arm_models_of(view)  # load and verify every arm's model now, not on the first session

    def _ensure_views(self, ctx: Any) -> None:
        """After a restore the broadcast state is back but this object's cache is empty: rebuild it once."""
        if self._views_loaded:
            return
        self._views_loaded = True
        for exp_id, text in ctx.get_broadcast_state(EXPERIMENTS_STATE).items():
            try:
                self._merge(parse_definition(text))
            except Exception as exc:  # a bad definition must never fail the job
                logger.error("restored experiment definition rejected experiment_id=%s reason=%s", exp_id, exc)

    # -- keyed side: sessions and outcomes ---------------------------------------------------------------------

    def process_element(self, value: Row, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Any:
        """Validate one raw record; decide for a session, attribute an outcome, dead-letter anything bad."""
        raw, topic, partition, offset = value[0], value[1], value[2], value[3]
        metrics = self._metrics
        assert metrics is not None
        try:
            if raw is None:
                raise events.InvalidEvent("null payload (tombstone) on an event topic")
            raw = bytes(raw)
            if topic == self._topics.sessions:
                session = events.parse_session(raw, feature_names=self._feature_names, max_bytes=self._max_bytes)
                self._check_key(session.customer_id, ctx)
                self._ensure_views(ctx)
                rows = self._on_session(session)
            elif topic == self._topics.outcomes:
                outcome = events.parse_outcome(raw, max_bytes=self._max_bytes)
                self._check_key(outcome.customer_id, ctx)
                self._ensure_views(ctx)
                rows = self._on_outcome(outcome, ctx)
            else:
                raise events.InvalidEvent(f"record from unexpected topic {topic!r}")
            # All or nothing: every row is built, and the state written, before the first one is emitted.
            yield from rows
        except events.InvalidEvent as exc:
            yield self._dead_letter(raw, topic, partition, offset, exc.reason)
        except Exception as exc:  # a record must never fail the job; keep the reason
            # States are immutable and written only after all rows are built: the cache still holds the last
            # saved version. A health record built for this session was dropped with it: send it again.
            self._health_reported.clear()
            logger.exception("unexpected error topic=%s partition=%s offset=%s", topic, partition, offset)
            yield self._dead_letter(raw, topic, partition, offset, f"unexpected {type(exc).__name__}: {exc}")
        metrics.maybe_flush(self._log_every_s)

    @staticmethod
    def _check_key(customer_id: str, ctx: Any) -> None:
        """The stream is keyed by the message key; a record whose customer_id differs would corrupt another key."""
        key = ctx.get_current_key()
        if key != customer_id:
            raise events.InvalidEvent(f"customer_id {customer_id!r} does not match the message key {key!r}")

    def _dead_letter(self, raw: bytes | None, topic: str, partition: int, offset: int, reason: str) -> Row:
        assert self._metrics is not None
        self._metrics.job(self._dead_counter_names.get(topic, "dead_lettered_other"))
        logger.warning("dead letter topic=%s partition=%s offset=%s reason=%s", topic, partition, offset, reason)
        record = events.dead_letter_record(
            source_topic=topic, partition=partition, offset=offset, raw=raw, error=reason
        )
        return Row(self._topics.dead_letter, f"{topic}/{partition}/{offset}", events.to_json(record))

    def _load(self, customer_id: str) -> CustomerState:
        customer = self._cache.get(customer_id)
        if customer is None:
            state = self._state.value()
            customer = CustomerState() if state is None else CustomerState.from_state(state)
            self._remember(customer_id, customer)
        return customer

    def _save(self, customer_id: str, customer: CustomerState) -> None:
        self._state.update(customer.to_state())  # PICKLED_BYTE_ARRAY: PyFlink pickles the tuple
        self._remember(customer_id, customer)

    def _remember(self, customer_id: str, customer: CustomerState) -> None:
        if len(self._cache) >= _CACHE_LIMIT:
            del self._cache[next(iter(self._cache))]
        self._cache[customer_id] = customer

    def _on_session(self, session: events.Session) -> list[Row]:
        """Decide for every experiment, then record the assignments (state read only if one assigns the customer)."""
        metrics = self._metrics
        assert metrics is not None
        metrics.job("sessions")
        decided_ts = int(time.time() * 1000)
        arms = decide_session(session.customer_id, session.features, self._views.values(), self._scorers_of)
        assigned = [arm for arm in arms if isinstance(arm, Assigned)]
        result = record_session(self._load(session.customer_id), session, assigned) if assigned else None
        exposed = iter(result.exposed if result is not None else ())
        rows: list[Row] = []
        running = 0
        for arm in arms:
            view = arm.view
            if isinstance(arm, Skipped) and arm.reason == "not_running":
                metrics.exp(view.id, f"sessions_skipped_{view.status}")
                continue
            running += 1
            metrics.exp(view.id, "sessions")
            for health_key, spec, usable in self._arm_models_of(view).health:
                if health_key not in self._health_reported:
                    rows.append(self._health(view, spec, usable, decided_ts))
            if isinstance(arm, Skipped):  # model_unusable (the experiment does not run) or not_in_traffic
                metrics.exp(view.id, arm.reason)
                continue
            rows.extend(self._assignment_rows(session, next(exposed), decided_ts))
        if running == 0:
            metrics.job("sessions_no_running_experiment")
        if result is not None and result.changed:
            self._save(session.customer_id, result.state)
        return rows

    def _assignment_rows(self, session: events.Session, exposed: Exposed, decided_ts: int) -> list[Row]:
        """The `assignments` record of one assignment, then the held outcomes its first exposure now gets."""
        metrics = self._metrics
        assert metrics is not None
        arm, view = exposed.arm, exposed.arm.view
        if arm.score is not None:
            metrics.exp(view.id, "scored")
        if arm.decision == "show":
            metrics.exp(view.id, "shown")
        segments = None
        if exposed.first:  # segments are fixed at the first exposure: computed once per customer, not per session
            metrics.exp(view.id, "first_exposures")
            segments = segments_of(session.features, exposed.exposure.pre_period_purchases, view.segment_attributes)
        metrics.exp(view.id, f"assigned_{arm.variant}")
        record = events.assignment_record(
            event_id=session.event_id,
            experiment_id=view.id,
            experiment_version=view.version,
            customer_id=session.customer_id,
            variant=arm.variant,
            score=arm.score,
            decision=arm.decision,
            model_version=arm.spec.model_version if arm.spec is not None else None,
            first_exposure=exposed.first,
            event_ts=session.ts,
            decided_ts=decided_ts,
            pre_period_purchases=exposed.exposure.pre_period_purchases,
            segments=segments,
        )
        rows = [Row(self._topics.assignments, session.customer_id, _to_json(record))]
        for attribution in exposed.late:
            metrics.exp(view.id, "late_outcomes")
            rows.append(self._attributed(attribution))
        return rows

    def _health(self, view: ExperimentView, spec: ArmSpec, usable: bool, ts: int) -> Row:
        """The `experiment-health` record of one arm model version, written once per task and version.

        Once per task is enough: the store keeps the newest record per (experiment, model version), and a restart
        (which resets the set in `open()`) writes it again, which is harmless.
        """
        self._health_reported.add((view.id, spec.model_version))
        record = events.experiment_health_record(
            experiment_id=view.id,
            experiment_version=view.version,
            model_version=spec.model_version,
            status="model_ready" if usable else "model_unusable",
            reason=None if usable else self._broken_models.get(_model_key(spec)) or "unknown error",
            ts=ts,
        )
        return Row(self._topics.experiment_health, view.id, _to_json(record))

    def _attributed(self, attribution: Attribution) -> Row:
        assert self._metrics is not None
        self._metrics.exp(attribution.experiment_id, "outcomes_attributed")
        outcome = attribution.outcome
        record = events.attributed_outcome_record(
            experiment_id=attribution.experiment_id,
            customer_id=outcome.customer_id,
            variant=attribution.variant,
            outcome=outcome,
            exposure_ts=attribution.exposure_ts,
        )
        return Row(self._topics.attributed_outcomes, outcome.customer_id, _to_json(record))

    def _on_outcome(self, outcome: events.Outcome, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> list[Row]:
        """Attribute the outcome; hold it (with a processing-time timer) while an exposure may still be late."""
        metrics = self._metrics
        assert metrics is not None
        metrics.job("outcomes")
        result = record_outcome(
            self._load(outcome.customer_id),
            outcome,
            self._views,
            hold_ms=self._hold_ms,
            now=lambda: ctx.timer_service().current_processing_time(),
        )
        rows = [self._attributed(attribution) for attribution in result.attributed]
        for exp_id, reason in result.unattributed:
            metrics.exp(exp_id, f"outcomes_{reason}")
        if result.held_until is not None:
            ctx.timer_service().register_processing_time_timer(result.held_until)
            if result.orphan:
                metrics.job("orphan_outcomes_held")
        self._save(outcome.customer_id, result.state)
        return rows

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext) -> Any:
        """Release held outcomes whose hold time is over; from now on they count only as pre-period purchases."""
        customer_id = ctx.get_current_key()
        result = expire_held(self._load(customer_id), timestamp)
        if result.expired:
            if result.orphans:
                assert self._metrics is not None
                self._metrics.job("orphan_outcomes_expired", result.orphans)
                logger.info("held outcomes expired unattributed customer_id=%s count=%d", customer_id, result.orphans)
            self._save(customer_id, result.state)
        yield from ()

    # -- helpers ------------------------------------------------------------------------------------------------

    def _scorers_of(self, view: ExperimentView) -> ArmScorers | None:
        """The scorer of each of the experiment's scored arms, or None when any arm's model is unusable.

        Per session a dict look-up: the arms are resolved once per view object.
        """
        entry = self._arm_models.get(view.id)
        if entry is None or entry.view is not view:
            entry = self._resolve_arm_models(view)
        return entry.scorers

    def _arm_models_of(self, view: ExperimentView) -> _ArmModels:
        """The experiment's arm models (scorers and health), loading and verifying each model on first use."""
        entry = self._arm_models.get(view.id)
        if entry is None or entry.view is not view:
            entry = self._resolve_arm_models(view)
        return entry

    def _resolve_arm_models(self, view: ExperimentView) -> _ArmModels:
        scorers = arm_scorers(view, self._scorer)
        health: dict[tuple[str, str], tuple[tuple[str, str], ArmSpec, bool]] = {}
        for spec in view.arms:
            key = (view.id, spec.model_version)
            usable = self._scorer(view, spec) is not None  # loaded above: a look-up
            if key not in health or (health[key][2] and not usable):
                health[key] = (key, spec, usable)
        entry = self._arm_models[view.id] = _ArmModels(view, scorers, tuple(health.values()))
        return entry

    def _scorer(self, view: ExperimentView, spec: ArmSpec) -> Scorer | None:
        """The verified scorer of one arm's model (version read from its file), loaded once per model per task."""
        key = _model_key(spec)
        scorer = self._scorers.get(key)
        if scorer is not None:
            return scorer
        if key in self._broken_models:
            return None
        from flink_pipeline.scoring import load_verified_scorer

        try:
            scorer = load_verified_scorer(
                spec.pmml_path, spec.model_version, self._reference_rows, fallback=self._scorer_fallback
            )
        except Exception as exc:  # a broken model stops that experiment, not the job
            self._broken_models[key] = str(exc)
            logger.error(
                "model unusable; the experiment assigns nobody until a usable model version arrives experiment_id=%s "
                "arm=%s model_version=%s reason=%s",
                view.id,
                spec.variant,
                spec.model_version,
                exc,
            )
            return None
        logger.info(
            "scorer ready experiment_id=%s arm=%s model_version=%s kind=%s",
            view.id,
            spec.variant,
            spec.model_version,
            getattr(scorer, "kind", "?"),
        )
        self._scorers[key] = scorer
        return scorer


def _model_key(spec: ArmSpec) -> tuple[str, str]:
    """What one loaded (or refused) scorer stands for: a model version read from one file."""
    return (spec.model_version, spec.pmml_path)
