"""What deciding needs to know about one experiment, taken from its definition on the `experiments` topic.

Why a separate, frozen view: the job reads each definition once (when it arrives on the broadcast stream) and then
consults it for every session, so the view holds exactly the fields the hot path uses, already in the shape
`experiment.core.assignment.assign` wants. The job and the simulator both decide from it (through
`experiment.core.decisions`). Definitions are validated by `experiment.core.definition` (the control plane's one
schema); a value that fails there is skipped and counted by the job, never fatal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from experiment.core.definition import ExperimentDefinition

__all__ = ["ArmSpec", "ExperimentView", "parse_definition"]


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """How one scored arm is decided: the model that scores it (path, version, features) and its threshold."""

    variant: str
    pmml_path: str
    model_version: str
    features: tuple[str, ...]
    threshold: float


@dataclass(frozen=True, slots=True)
class ExperimentView:
    """The decision-relevant part of one version of an experiment definition."""

    id: str
    version: int
    status: str
    salt: str
    traffic: float
    weights: tuple[tuple[str, float], ...]
    control: str
    threshold: float
    pmml_path: str
    model_version: str
    features: tuple[str, ...]
    attribution_window_ms: int
    #: Every scored arm, in declared order, with its own model and threshold (the experiment's when it has none).
    #: Left empty (a view built by hand), it is every non-control arm on the experiment's model and threshold.
    arms: tuple[ArmSpec, ...] = ()
    #: Session features recorded with each first exposure for the segment breakdown (besides the built-in ones).
    segment_attributes: tuple[str, ...] = ()
    #: `arms` by variant name, built once here: the job looks an arm up per session.
    _by_variant: Mapping[str, ArmSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        arms = self.arms
        if not arms:
            arms = tuple(
                ArmSpec(name, self.pmml_path, self.model_version, tuple(self.features), self.threshold)
                for name, _weight in self.weights
                if name != self.control
            )
            object.__setattr__(self, "arms", arms)
        scored = [name for name, _weight in self.weights if name != self.control]
        if [spec.variant for spec in arms] != scored:
            raise ValueError(
                f"experiment {self.id!r}: the scored arms {[spec.variant for spec in arms]} must be every arm but "
                f"the control, in declared order: {scored}"
            )
        object.__setattr__(self, "_by_variant", {spec.variant: spec for spec in arms})

    def arm(self, variant: str) -> ArmSpec | None:
        """The scored arm `variant` (its model and threshold), or None for the control."""
        return self._by_variant.get(variant)

    @property
    def is_running(self) -> bool:
        """Only running experiments assign sessions; paused, stopped, draft and archived ones are counted instead."""
        return self.status == "running"

    def is_scored(self, variant: str) -> bool:
        """Whether a customer assigned to `variant` is scored (and may be shown the category).

        Every arm but the definition's named control is; the control sees the site's default. Pure, so the job and
        the simulator make the same call and a property test can pin it.
        """
        return variant != self.control


def parse_definition(text: str | bytes) -> ExperimentView:
    """Validate a definition with the control plane's schema (raises `ExperimentError`) and keep what deciding uses."""
    definition = ExperimentDefinition.from_json(text)
    return ExperimentView(
        id=definition.id,
        version=definition.version,
        status=definition.status,
        salt=definition.salt,
        traffic=definition.traffic,
        weights=tuple(definition.weights()),
        control=definition.control,
        threshold=definition.threshold,
        pmml_path=definition.model.pmml_path,
        model_version=definition.model.model_version,
        features=tuple(definition.model.features),
        attribution_window_ms=definition.attribution_window_s * 1000,
        arms=tuple(
            ArmSpec(name, ref.pmml_path, ref.model_version, tuple(ref.features), definition.threshold_of(name))
            for name, ref in definition.models().items()
        ),
        segment_attributes=definition.segment_attributes,
    )
