"""A model directory as training writes it (a real, tiny PMML and its card), for tests that need `--model`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.helpers.tiny_pmml import tiny_pmml

__all__ = ["write_model_dir"]


def write_model_dir(
    directory: Path, *, parity_passed: bool = True, pmml_text: str | None = None, threshold: float = 0.4
) -> str:
    """A model directory as training writes it: a real PMML and its card (model.json). Returns the sha256.

    `pmml_text` (default: `tiny_pmml()`) gives another model its own bytes, hence its own model_version.
    """
    directory.mkdir(parents=True)
    pmml = directory / "xgboost_model.pmml"
    pmml.write_text(tiny_pmml() if pmml_text is None else pmml_text, encoding="utf-8")
    sha = hashlib.sha256(pmml.read_bytes()).hexdigest()
    card = {
        "model_version": sha,
        "pmml_file": pmml.name,
        "features": ["a", "b"],
        "threshold": threshold,
        "best_params": {"max_depth": 2},
        "cv": {"best_score": 0.8},
        "metrics": {},
        "data": {"fingerprint": "f" * 64},
        "parity": {"max_abs_diff": 1e-7 if parity_passed else 0.2, "flips": 0 if parity_passed else 12, "n": 4000,
                   "passed": parity_passed, "tolerance": 1e-6, "threshold": 0.4},
    }  # fmt: skip
    (directory / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return sha
