"""The experiment definition: a frozen, typed, validated value that is published, whole, on every change.

Why a frozen value with validation in its constructor: the Flink job, the CLI and the dashboard all read the same
JSON from the compacted `experiments` topic, and every one of them must be able to trust it. A definition that exists
is valid; changing one means building the next version (`transition`, `updated`), never mutating.

Lifecycle: draft → running ⇄ paused → stopped (running may also stop directly); stopping a draft archives it (it
never ran, so there is nothing to analyse; `abflow experiment list` hides it). Every change raises `version` by one.
The salt and the variant weights decide who gets what (see `experiment.core.assignment`); once an experiment has been
launched they are frozen, because changing them would reshuffle users between variants mid-experiment. Traffic may
change at any time before the stop: it only adds or removes customers.

JSON (the value on the compacted `experiments` topic), sorted keys, compact:
    {"id", "name", "hypothesis", "owner", "category",
     "model": {"pmml_path", "model_version", "features"}, "threshold", "salt", "traffic",
     "variants": [{"name", "weight"}, ...], "control",  # the control's name; it must be declared first
     "arm_models": {arm: {"model": {...}, "threshold"}},  # a model arm's own model; others use "model"
     "segment_attributes": [feature, ...],                # session attributes to break the lift down by
     "primary_metric", "secondary_metrics", "guardrail_metrics", "attribution_window_s",
     "planned_sample_size", "mde", "status", "version", "created_ts", "updated_ts"}

Why the control is named, not implied by position: a list such as `treatment:0.5,control:0.5` used to make the arm
called "treatment" the control, so the arm called "control" was scored and shown the category and every report
read backwards. The control is now a field, and a definition is refused unless the control is declared first and
no other arm is called "control"; code that needs the control reads the field. A definition written before the
field existed has no `control` key: its first arm was the control then, so that is what it is read as (and a
swapped one of those is refused like a new one).

Model arms: every arm but the control is scored, by the experiment's `model` and `threshold` unless `arm_models`
gives that arm its own (champion vs challenger: `control`, `champion`, `challenger`, each model arm with its model).
A model arm's model is part of the treatment: it is frozen once launched like `model`, so a new model version needs
a new experiment. `segment_attributes` names session features the job records with each first exposure, so the
lift can be broken down by them (besides the built-in segments, `experiment.core.segments`); it is frozen once
launched too, because first exposures recorded before a change would lack it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from experiment.core.assignment import assign
from experiment.core.errors import ExperimentError

__all__ = [
    "ACTIONS",
    "DEFAULT_ATTRIBUTION_WINDOW_S",
    "DEFAULT_CONTROL",
    "FINAL_STATUSES",
    "METRICS",
    "RESERVED_SEGMENT_NAMES",
    "TRANSITIONS",
    "WEIGHT_TOLERANCE",
    "Action",
    "ArmModel",
    "ExperimentDefinition",
    "Metric",
    "ModelRef",
    "Status",
    "Variant",
    "control_of",
]

Status = Literal["draft", "running", "paused", "stopped", "archived"]
Action = Literal["launch", "pause", "resume", "stop"]
Metric = Literal["conversion", "revenue_per_user"]
STATUSES: tuple[str, ...] = get_args(Status)
ACTIONS: tuple[str, ...] = get_args(Action)
METRICS: tuple[str, ...] = get_args(Metric)

# action -> {status it may start from: status it leads to}; a stopped draft is archived, as it never ran
TRANSITIONS: dict[str, dict[str, Status]] = {
    "launch": {"draft": "running"},
    "pause": {"running": "paused"},
    "resume": {"paused": "running"},
    "stop": {"draft": "archived", "running": "stopped", "paused": "stopped"},
}
#: Statuses nothing leads out of; such a definition can no longer be changed.
FINAL_STATUSES = ("stopped", "archived")
#: The control's name when none is given, and the only arm name reserved for the control.
DEFAULT_CONTROL = "control"

WEIGHT_TOLERANCE = 1e-9
DEFAULT_ATTRIBUTION_WINDOW_S = 7 * 24 * 3600
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# Fields that decide who is in which variant, or what the treatment is; frozen once launched.
_RESHUFFLING = ("salt", "variants")
_TREATMENT = ("model", "category", "threshold", "control", "arm_models")
# Fields the job records with each first exposure; a change mid-test would leave earlier exposures without it.
_RECORDED = ("segment_attributes",)
# Keys a definition may lack: older writers did not have them (see `control_of`).
_OPTIONAL_KEYS = ("control", "arm_models", "segment_attributes")
#: Segment names computed by the job for every first exposure (`experiment.core.segments`); attributes may not
#: reuse them.
RESERVED_SEGMENT_NAMES = ("age_band", "gender", "customer_type", "history_tier")
_NOT_EDITABLE = ("id", "status", "version", "created_ts", "updated_ts")


def _fail(experiment_id: object, message: str) -> ExperimentError:
    return ExperimentError(f"Experiment '{experiment_id}': {message}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _model_ref_from(ident: object, where: str, model: object) -> ModelRef:
    if not isinstance(model, dict) or {"pmml_path", "model_version", "features"} - set(model):
        raise _fail(ident, f"{where} must be an object with pmml_path, model_version and features.")
    if not isinstance(model["features"], list):
        raise _fail(ident, f"{where}.features must be a list. Got {model['features']!r}.")
    return ModelRef(model["pmml_path"], model["model_version"], tuple(model["features"]))


def _arm_models_from(ident: object, data: object) -> dict[str, ArmModel]:
    """`{"challenger": {"model": {...}, "threshold": 0.45}}` → `{"challenger": ArmModel(...)}` (checked later)."""
    if not isinstance(data, dict):
        raise _fail(ident, f"arm_models must be an object of arm name -> {{model, threshold}}. Got {data!r}.")
    arms: dict[str, ArmModel] = {}
    for name, arm in data.items():
        if not isinstance(arm, dict) or {"model", "threshold"} - set(arm):
            raise _fail(ident, f"arm_models[{name!r}] must be an object with model and threshold. Got {arm!r}.")
        arms[name] = ArmModel(_model_ref_from(ident, f"arm_models.{name}.model", arm["model"]), arm["threshold"])
    return arms


def control_of(data: Mapping[str, Any]) -> str:
    """The control arm named by a definition dict (as on the topic or in the results store).

    A definition written before `control` existed meant its first declared arm; that is the only place where the
    position still decides, because it is what the job did with such a definition.
    """
    control = data.get("control")
    if control is not None:
        return str(control)
    variants = data.get("variants") or ()
    first = variants[0] if isinstance(variants, list | tuple) and variants else None
    return str(first["name"]) if isinstance(first, Mapping) and "name" in first else DEFAULT_CONTROL


@dataclass(frozen=True)
class Variant:
    """One arm of the experiment and its share of the in-traffic customers."""

    name: str
    weight: float


@dataclass(frozen=True)
class ModelRef:
    """The PMML model that scores treatment customers, pinned by the SHA-256 of its file."""

    pmml_path: str
    model_version: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class ArmModel:
    """A model arm's own model and threshold (champion vs challenger); other scored arms use the experiment's."""

    model: ModelRef
    threshold: float


@dataclass(frozen=True)
class ExperimentDefinition:
    """One version of one experiment. Construction validates; an invalid value raises `ExperimentError`."""

    id: str
    name: str
    hypothesis: str
    owner: str
    category: str
    model: ModelRef
    threshold: float
    salt: str
    traffic: float
    variants: tuple[Variant, ...]
    control: str = DEFAULT_CONTROL
    primary_metric: Metric = "conversion"
    secondary_metrics: tuple[Metric, ...] = ("revenue_per_user",)
    guardrail_metrics: tuple[Metric, ...] = ()
    attribution_window_s: int = DEFAULT_ATTRIBUTION_WINDOW_S
    planned_sample_size: int | None = None
    mde: float | None = None
    status: Status = "draft"
    version: int = 1
    created_ts: int = 0
    updated_ts: int = 0
    arm_models: Mapping[str, ArmModel] = field(default_factory=dict)
    segment_attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._validate()

    # ----------------------------------------------------------------------------------------------- construction
    @classmethod
    def new(
        cls,
        *,
        id: str,
        name: str,
        hypothesis: str,
        owner: str,
        category: str,
        model: ModelRef,
        threshold: float,
        now_ms: int,
        salt: str | None = None,
        traffic: float = 1.0,
        variants: Sequence[tuple[str, float]] = (("control", 0.5), ("treatment", 0.5)),
        control: str = DEFAULT_CONTROL,
        primary_metric: Metric = "conversion",
        secondary_metrics: Sequence[Metric] = ("revenue_per_user",),
        guardrail_metrics: Sequence[Metric] = (),
        attribution_window_s: int = DEFAULT_ATTRIBUTION_WINDOW_S,
        planned_sample_size: int | None = None,
        mde: float | None = None,
        arm_models: Mapping[str, ArmModel] | None = None,
        segment_attributes: Sequence[str] = (),
    ) -> ExperimentDefinition:
        """Version 1 of a new experiment, in draft; the salt defaults to the id."""
        return cls(
            id=id,
            name=name,
            hypothesis=hypothesis,
            owner=owner,
            category=category,
            model=model,
            threshold=threshold,
            salt=id if salt is None else salt,
            traffic=traffic,
            variants=tuple(Variant(n, w) for n, w in variants),
            control=control,
            primary_metric=primary_metric,
            secondary_metrics=tuple(secondary_metrics),
            guardrail_metrics=tuple(guardrail_metrics),
            attribution_window_s=attribution_window_s,
            planned_sample_size=planned_sample_size,
            mde=mde,
            status="draft",
            version=1,
            created_ts=now_ms,
            updated_ts=now_ms,
            arm_models=dict(arm_models or {}),
            segment_attributes=tuple(segment_attributes),
        )

    # --------------------------------------------------------------------------------------------------- queries
    @property
    def treatments(self) -> tuple[str, ...]:
        """Names of the variants other than the named `control`, each scored by the model."""
        return tuple(v.name for v in self.variants if v.name != self.control)

    def model_of(self, variant: str) -> ModelRef | None:
        """The model that scores `variant`: its own (`arm_models`), else the experiment's; None for the control."""
        if variant == self.control:
            return None
        own = self.arm_models.get(variant)
        return self.model if own is None else own.model

    def threshold_of(self, variant: str) -> float:
        """The threshold on `variant`'s score above which its customers are shown the category."""
        own = self.arm_models.get(variant)
        return self.threshold if own is None else own.threshold

    def models(self) -> dict[str, ModelRef]:
        """Every scored arm's model, in declared order (what `launch` verifies and the job loads)."""
        return {name: ref for name in self.treatments if (ref := self.model_of(name)) is not None}

    def weights(self) -> list[tuple[str, float]]:
        """`[(name, weight), ...]` in declared order: the input `experiment.core.assignment.assign` expects."""
        return [(v.name, v.weight) for v in self.variants]

    @property
    def is_running(self) -> bool:
        """Whether sessions are being assigned and scored now."""
        return self.status == "running"

    def assign(self, customer_id: str) -> str | None:
        """The customer's variant under this definition, or None when outside its traffic."""
        return assign(self.salt, customer_id, self.traffic, self.weights())

    # --------------------------------------------------------------------------------------------------- changes
    def transition(self, action: Action, now_ms: int) -> ExperimentDefinition:
        """The next version after a lifecycle action; raises `ExperimentError` for an illegal transition."""
        if action not in TRANSITIONS:
            raise _fail(self.id, f"unknown action '{action}'; expected one of {', '.join(ACTIONS)}.")
        targets = TRANSITIONS[action]
        if self.status not in targets:
            raise _fail(
                self.id,
                f"cannot {action}: it is {self.status}, and {action} is only allowed from {' or '.join(targets)}.",
            )
        updated_ts = max(now_ms, self.updated_ts)
        status = targets[self.status]
        return replace(self, status=status, version=self.version + 1, updated_ts=updated_ts)

    def updated(self, now_ms: int, **changes: Any) -> ExperimentDefinition:
        """The next version with some fields changed (e.g. `traffic=0.5`); refuses changes that corrupt the test.

        Refused: any change to a stopped or archived experiment; salt or weights of a launched experiment (that
        would reshuffle users between variants); model, category, threshold or control of a launched experiment
        (that would change the treatment mid-test); the identity, status, version and timestamps (use `transition`).
        """
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise _fail(self.id, f"unknown field(s) {', '.join(unknown)}.")
        fixed = sorted(set(changes) & set(_NOT_EDITABLE))
        if fixed:
            raise _fail(self.id, f"{', '.join(fixed)} cannot be changed directly.")
        if "variants" in changes:
            changes["variants"] = tuple(
                v if isinstance(v, Variant) else Variant(str(v[0]), v[1]) for v in changes["variants"]
            )
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if self.status in FINAL_STATUSES:
            article = "an" if self.status[0] in "aeiou" else "a"
            raise _fail(self.id, f"it is {self.status}; {article} {self.status} experiment cannot be changed.")
        if self.status in ("running", "paused"):
            reshuffle = [k for k in _RESHUFFLING if k in real]
            if reshuffle:
                what = " and ".join("the salt" if k == "salt" else "the variant weights" for k in reshuffle)
                raise _fail(
                    self.id,
                    f"cannot change {what} of a {self.status} experiment: it would reshuffle users between "
                    "variants. Stop it and create a new experiment instead.",
                )
            treatment = [k for k in _TREATMENT if k in real]
            if treatment:
                raise _fail(
                    self.id,
                    f"cannot change {', '.join(treatment)} of a {self.status} experiment: it would change the "
                    "treatment mid-test. Stop it and create a new experiment instead.",
                )
            recorded = [k for k in _RECORDED if k in real]
            if recorded:
                raise _fail(
                    self.id,
                    f"cannot change {', '.join(recorded)} of a {self.status} experiment: the first exposures "
                    "recorded so far would lack it. Stop it and create a new experiment instead.",
                )
        return replace(self, **changes, version=self.version + 1, updated_ts=max(now_ms, self.updated_ts))

    # ------------------------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with the contract's keys."""
        data = asdict(self)
        data["model"]["features"] = list(self.model.features)
        data["variants"] = [{"name": v.name, "weight": v.weight} for v in self.variants]
        for key in ("secondary_metrics", "guardrail_metrics"):
            data[key] = list(data[key])
        # Written only when used, so a one-model definition keeps the JSON it always had.
        data.pop("arm_models")
        data.pop("segment_attributes")
        if self.arm_models:
            data["arm_models"] = {
                name: {"model": {**asdict(arm.model), "features": list(arm.model.features)}, "threshold": arm.threshold}
                for name, arm in self.arm_models.items()
            }
        if self.segment_attributes:
            data["segment_attributes"] = list(self.segment_attributes)
        return data

    def to_json(self) -> str:
        """Compact JSON with sorted keys (the value written to the `experiments` topic)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ExperimentDefinition:
        """Parse and validate one definition; any problem raises `ExperimentError` naming the field."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ExperimentError(f"Experiment definition is not valid JSON: {exc}.") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> ExperimentDefinition:
        """Build from a decoded JSON object; missing keys and wrong types raise `ExperimentError`."""
        if not isinstance(data, dict):
            raise ExperimentError(f"Experiment definition must be a JSON object. Got {type(data).__name__}.")
        ident = data.get("id", "?")
        required = [key for key in cls.__dataclass_fields__ if key not in _OPTIONAL_KEYS]
        missing = [key for key in required if key not in data]
        if missing:
            raise _fail(ident, f"definition is missing {', '.join(missing)}.")
        model = _model_ref_from(ident, "model", data["model"])
        variants = data["variants"]
        if not isinstance(variants, list) or not all(
            isinstance(v, dict) and {"name", "weight"} <= set(v) for v in variants
        ):
            raise _fail(ident, f"variants must be a list of {{name, weight}} objects. Got {variants!r}.")
        for key in ("secondary_metrics", "guardrail_metrics"):
            if not isinstance(data[key], list):
                raise _fail(ident, f"{key} must be a list. Got {data[key]!r}.")
        values = {key: data[key] for key in required}
        values["model"] = model
        values["variants"] = tuple(Variant(v["name"], v["weight"]) for v in variants)
        values["secondary_metrics"] = tuple(data["secondary_metrics"])
        values["guardrail_metrics"] = tuple(data["guardrail_metrics"])
        values["control"] = control_of(data)
        values["arm_models"] = _arm_models_from(ident, data.get("arm_models", {}))
        attributes = data.get("segment_attributes", [])
        if not isinstance(attributes, list):
            raise _fail(ident, f"segment_attributes must be a list. Got {attributes!r}.")
        values["segment_attributes"] = tuple(attributes)
        return cls(**values)  # keys this version does not know are ignored, so newer writers stay readable

    # ------------------------------------------------------------------------------------------------ validation
    def _validate_model(self, where: str, model: object) -> None:
        ident = self.id
        if not isinstance(model, ModelRef):
            raise _fail(ident, f"{where} must be a ModelRef. Got {model!r}.")
        if not isinstance(model.pmml_path, str) or not model.pmml_path:
            raise _fail(ident, f"{where}.pmml_path must be a non-empty string. Got {model.pmml_path!r}.")
        if not isinstance(model.model_version, str) or not _SHA256_PATTERN.match(model.model_version):
            raise _fail(
                ident,
                f"{where}.model_version must be the SHA-256 of the PMML file (64 lowercase hex digits). "
                f"Got {model.model_version!r}.",
            )
        if not model.features or not all(isinstance(f, str) and f for f in model.features):
            raise _fail(ident, f"{where}.features must be a non-empty list of names. Got {list(model.features)!r}.")
        if len(set(model.features)) != len(model.features):
            raise _fail(ident, f"{where}.features has duplicates: {list(model.features)!r}.")

    def _validate_arm_models(self, names: list[str]) -> None:
        """Only model arms (declared, not the control) may have their own model; each is checked like `model`."""
        ident = self.id
        if not isinstance(self.arm_models, Mapping):
            raise _fail(ident, f"arm_models must map arm names to models. Got {self.arm_models!r}.")
        for name, arm in self.arm_models.items():
            if name not in names:
                raise _fail(ident, f"arm_models names {name!r}, which is not a variant ({', '.join(names)}).")
            if name == self.control:
                raise _fail(ident, f"arm_models names the control {name!r}; the control is never scored.")
            if not isinstance(arm, ArmModel):
                raise _fail(ident, f"arm_models[{name!r}] must be an ArmModel. Got {arm!r}.")
            self._validate_model(f"arm_models.{name}.model", arm.model)
            if not _is_number(arm.threshold) or not 0.0 <= arm.threshold <= 1.0:
                raise _fail(
                    ident, f"arm_models.{name}.threshold must be a probability in [0, 1]. Got {arm.threshold!r}."
                )

    def _validate_segment_attributes(self) -> None:
        """Segment attributes are session features of the experiment's models, named once, not a built-in name."""
        ident, attributes = self.id, self.segment_attributes
        if not isinstance(attributes, tuple) or not all(isinstance(a, str) and a for a in attributes):
            raise _fail(ident, f"segment_attributes must be a list of feature names. Got {attributes!r}.")
        if len(set(attributes)) != len(attributes):
            raise _fail(ident, f"segment_attributes has duplicates: {list(attributes)!r}.")
        known = set(self.model.features).union(*(arm.model.features for arm in self.arm_models.values()))
        for name in attributes:
            if name in RESERVED_SEGMENT_NAMES:
                raise _fail(
                    ident,
                    f"segment attribute {name!r} is a built-in segment ({', '.join(RESERVED_SEGMENT_NAMES)}); "
                    "it is recorded already.",
                )
            if name not in known:
                raise _fail(ident, f"segment attribute {name!r} is not a feature of the experiment's models.")

    def _validate_control(self, names: list[str]) -> None:
        """The named control must be an arm, declared first, and no other arm may be called "control"."""
        control, ident = self.control, self.id
        declared = ", ".join(names)
        if control not in names:
            raise _fail(ident, f"control must name one of the variants ({declared}). Got control={control!r}.")
        if DEFAULT_CONTROL in names and control != DEFAULT_CONTROL:
            raise _fail(
                ident,
                f"the variant named {DEFAULT_CONTROL!r} must be the control. Got control={control!r} with "
                f"variants {declared}.",
            )
        if names[0] != control:
            raise _fail(
                ident,
                f"the control must be the first declared variant. Got control={control!r} with variants {declared}.",
            )

    def _validate(self) -> None:
        ident = self.id
        if not isinstance(ident, str) or not _ID_PATTERN.match(ident):
            raise _fail(
                ident,
                "id must be a slug: 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit.",
            )
        for key in ("name", "category", "salt"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise _fail(ident, f"{key} must be a non-empty string. Got {value!r}.")
        for key in ("hypothesis", "owner"):
            if not isinstance(getattr(self, key), str):
                raise _fail(ident, f"{key} must be a string. Got {getattr(self, key)!r}.")

        self._validate_model("model", self.model)

        if not _is_number(self.threshold) or not 0.0 <= self.threshold <= 1.0:
            raise _fail(ident, f"threshold must be a probability in [0, 1]. Got {self.threshold!r}.")
        if not _is_number(self.traffic) or not 0.0 < self.traffic <= 1.0:
            raise _fail(ident, f"traffic must be in (0, 1]. Got {self.traffic!r}.")

        variants = self.variants
        if not isinstance(variants, tuple) or not all(isinstance(v, Variant) for v in variants):
            raise _fail(ident, f"variants must be a tuple of Variant. Got {variants!r}.")
        if len(variants) < 2:
            raise _fail(ident, f"needs at least 2 variants (control first). Got {len(variants)}.")
        names = [v.name for v in variants]
        for name in names:
            if not isinstance(name, str) or not _ID_PATTERN.match(name):
                raise _fail(ident, f"variant name {name!r} must be a slug (a-z, 0-9, '-', '_').")
        if len(set(names)) != len(names):
            raise _fail(ident, f"variant names must be unique. Got {', '.join(names)}.")
        for v in variants:
            if not _is_number(v.weight) or not 0.0 < v.weight < 1.0:
                raise _fail(ident, f"the weight of variant '{v.name}' must be in (0, 1). Got {v.weight!r}.")
        total = math.fsum(v.weight for v in variants)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            terms = " + ".join(f"{v.weight:.12g}" for v in variants)
            raise _fail(ident, f"the variant weights must sum to 1 (within 1e-9). Got {terms} = {total:.12g}.")
        self._validate_control(names)
        self._validate_arm_models(names)
        self._validate_segment_attributes()

        for key, metrics in (
            ("primary_metric", (self.primary_metric,)),
            ("secondary_metrics", self.secondary_metrics),
            ("guardrail_metrics", self.guardrail_metrics),
        ):
            if not isinstance(metrics, tuple):
                raise _fail(ident, f"{key} must be a tuple. Got {metrics!r}.")
            for metric in metrics:
                if metric not in METRICS:
                    raise _fail(ident, f"unknown metric {metric!r} in {key}; known: {', '.join(METRICS)}.")

        window = self.attribution_window_s
        if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
            raise _fail(ident, f"attribution_window_s must be a positive whole number of seconds. Got {window!r}.")
        size = self.planned_sample_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
            raise _fail(ident, f"planned_sample_size must be a positive integer or null. Got {size!r}.")
        if self.mde is not None and (not _is_number(self.mde) or self.mde <= 0):
            raise _fail(ident, f"mde must be a positive number or null. Got {self.mde!r}.")

        if self.status not in STATUSES:
            raise _fail(ident, f"status must be one of {', '.join(STATUSES)}. Got {self.status!r}.")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise _fail(ident, f"version must be an integer >= 1. Got {self.version!r}.")
        for key in ("created_ts", "updated_ts"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _fail(ident, f"{key} must be epoch milliseconds (an integer >= 0). Got {value!r}.")
        if self.updated_ts < self.created_ts:
            raise _fail(ident, f"updated_ts ({self.updated_ts}) is before created_ts ({self.created_ts}).")
