"""Fixtures for the Flink job tests: one real PMML model per session, trained by the training code.

The model is small (a few hundred customers, 10 categories, the quick grid) so that training takes seconds, but it is
the real thing: xgboost inside the sklearn pipeline, exported by nyoka, fixed and parity-gated by `training/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class JobModel:
    """A trained model and the data it came from."""

    data_dir: Path
    pmml: Path
    version: str
    features: tuple[str, ...]
    categories: int


@pytest.fixture(scope="session")
def job_model(tmp_path_factory: pytest.TempPathFactory) -> JobModel:
    """A quick-trained PMML (real xgboost + nyoka) whose features are `age, man, woman, cat1..cat10`."""
    from data.generator import generate, write
    from training.train import TrainConfig, train

    categories = 10
    root = tmp_path_factory.mktemp("job_model")
    write(generate(customers=800, categories=categories, seed=5), root / "data")
    result = train(TrainConfig(data_dir=root / "data", out_dir=root / "model", quick=True, n_jobs=1))
    features = ("age", "man", "woman", *(f"cat{i}" for i in range(1, categories + 1)))
    return JobModel(
        data_dir=root / "data",
        pmml=Path(result.files["pmml"]),
        version=result.model_version,
        features=features,
        categories=categories,
    )
