"""``model.json``, the model card: what was trained, on which data, and whether its PMML passed parity.

Why a card: the Flink job only sees the PMML file; the card ties that file (by sha256, the
``model_version``) to its features, threshold, metrics and parity result. Launching an experiment calls
`load_verified_model_card`, which refuses a model whose parity failed or whose PMML bytes differ from the
ones the card describes. The card lives with the rest of the model artefact in `experiment.model`: training writes
it, the launcher reads it, and reading it needs neither numpy nor pandas.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiment.core.errors import ModelError
from experiment.model.digest import sha256_file
from experiment.model.pmml_guard import check_pmml

__all__ = [
    "MODEL_CARD_NAME",
    "ModelCard",
    "ParityResult",
    "load_model_card",
    "load_verified_model_card",
]

MODEL_CARD_NAME = "model.json"


@dataclass(frozen=True)
class ParityResult:
    """Native versus PMML scores on ``n`` rows; ``passed`` iff within tolerance with zero flips.

    `training.parity` computes it and re-exports it; it is defined here, with the model.json format it is
    part of, so that reading a card (the launch gate) does not import numpy and pandas.
    """

    max_abs_diff: float
    flips: int
    n: int
    passed: bool
    tolerance: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written into model.json."""
        return asdict(self)

    def describe(self) -> str:
        """One line with the numbers, for logs and error messages."""
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"PMML parity {verdict} on {self.n} rows: max |dP| = {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:g}), {self.flips} decision flips at threshold {self.threshold:g}"
        )


@dataclass(frozen=True)
class ModelCard:
    """model.json as a frozen object. ``pmml_path`` is resolved against the card's directory.

    ``name``, ``seed`` and ``grid`` say how a champion and a challenger differ. Cards written before they existed
    still load: ``name`` is then None, ``seed`` the ``random_state`` key (None if absent) and ``grid`` is derived
    from ``cv.quick`` ("quick" or "default"), as those were the only two grids then.
    """

    path: Path
    model_version: str
    pmml_path: Path
    features: tuple[str, ...]
    threshold: float
    best_params: dict[str, Any]
    cv_score: float
    metrics: dict[str, Any]
    data_fingerprint: str
    parity: ParityResult
    raw: dict[str, Any]
    name: str | None = None
    seed: int | None = None
    grid: str | None = None

    def verify(self) -> None:
        """Raise `ModelError` unless parity passed and `verify_pmml` accepts the PMML."""
        if not self.parity.passed:
            raise ModelError(
                f"{self.path}: the PMML failed the parity gate (max |dP| = {self.parity.max_abs_diff:.3g}, "
                f"{self.parity.flips} flips on {self.parity.n} rows); retrain before using it."
            )
        self.verify_pmml()

    def verify_pmml(self) -> None:
        """Raise `ModelError` unless the PMML passes the XML gate and its sha256 equals ``model_version``.

        Why both, before anything reads the PMML: the hash proves these are the bytes training wrote, the gate
        (`experiment.model.pmml_guard`) that no XML engine will be led to fetch or expand anything, even when someone
        re-hashed model.json to match a hostile file. The gate runs first, so an oversized file is never hashed.
        """
        if not self.pmml_path.is_file():
            raise ModelError(f"{self.path}: PMML file {self.pmml_path} not found.")
        check_pmml(self.pmml_path)
        actual = sha256_file(self.pmml_path)
        if actual != self.model_version:
            raise ModelError(
                f"{self.pmml_path}: sha256 is {actual}, but {self.path} says model_version "
                f"{self.model_version}; the PMML was changed after training."
            )


def _field(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise ModelError(f"{path}: required key '{key}' is missing.")
    return data[key]


def _grid_name(cv: dict[str, Any]) -> str | None:
    """The named grid a card was trained with; old cards only say whether it was the quick one."""
    if "grid_name" in cv:
        return str(cv["grid_name"])
    if "quick" in cv:
        return "quick" if cv["quick"] else "default"
    return None


def load_model_card(path: Path | str) -> ModelCard:
    """Read model.json (or the directory holding it) into a `ModelCard`; does not check the PMML."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_CARD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelError(f"{path}: model card not found (run `abflow train` first).") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: not a readable model card ({error}).") from error
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object. Got {type(data).__name__}.")
    parity = _field(data, "parity", path)
    try:
        summary = ParityResult(
            max_abs_diff=float(parity["max_abs_diff"]),
            flips=int(parity["flips"]),
            n=int(parity["n"]),
            passed=bool(parity["passed"]),
            tolerance=float(parity["tolerance"]),
            threshold=float(parity["threshold"]),
        )
        card = ModelCard(
            path=path,
            model_version=str(_field(data, "model_version", path)),
            pmml_path=(path.parent / str(_field(data, "pmml_file", path))),
            features=tuple(str(f) for f in _field(data, "features", path)),
            threshold=float(_field(data, "threshold", path)),
            best_params=dict(_field(data, "best_params", path)),
            cv_score=float(_field(data, "cv", path)["best_score"]),
            metrics=dict(_field(data, "metrics", path)),
            data_fingerprint=str(_field(data, "data", path)["fingerprint"]),
            parity=summary,
            raw=data,
            name=None if data.get("name") is None else str(data["name"]),
            seed=None if data.get("random_state") is None else int(data["random_state"]),
            grid=_grid_name(dict(data["cv"])),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"{path}: malformed model card ({type(error).__name__}: {error}).") from error
    return card


def load_verified_model_card(path: Path | str) -> ModelCard:
    """`load_model_card` then `ModelCard.verify`: the one call a launcher needs."""
    card = load_model_card(path)
    card.verify()
    return card
