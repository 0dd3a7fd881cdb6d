"""Fixtures of the end-to-end tier: a quick trained model, a challenger, and the decision job in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick model trained on generated data (60 categories: the job's session schema)."""
    base = tmp_path_factory.mktemp("e2e-model")
    runner = CliRunner()
    data = runner.invoke(app, ["data", "generate", "--out", str(base / "data"), "--customers", "3000", "--seed", "7"])
    assert data.exit_code == 0, data.output
    train = runner.invoke(app, ["train", "--data", str(base / "data"), "--out", str(base / "model"), "--quick"])
    assert train.exit_code == 0, train.output
    return base


@pytest.fixture
def running_job(abflow_settings, model_dir: Path, tmp_path: Path) -> Iterator[int]:
    """The decision job on a local MiniCluster in its own process (what `abflow pipeline run --detach` starts),
    with this test's topics, consumer group, transactional ids and checkpoint directory."""
    kafka = abflow_settings.kafka
    with (tmp_path / "job.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flink_pipeline.job",
                "--local",
                "--bootstrap",
                kafka.bootstrap_servers,
                "--topic-prefix",
                kafka.topic_prefix,
                "--group-id",
                f"{kafka.topic_prefix}job",
                "--transactional-id-prefix",
                f"{kafka.topic_prefix}tx",
                "--reference-rows",
                str(model_dir / "data"),
                "--checkpoint-dir",
                (tmp_path / "checkpoints").as_uri(),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process.pid
    finally:
        process.terminate()  # the job cancels itself on SIGTERM (aborting its open transaction)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def challenger_dir(model_dir: Path) -> Path:
    """A challenger trained on the same data without `age` (another seed): a different, worse targeting model."""
    features = json.loads((model_dir / "model" / "model.json").read_text())["features"]
    subset = ",".join(name for name in features if name != "age")
    out = model_dir / "challenger"
    train = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(model_dir / "data"),
            "--out",
            str(out),
            "--quick",
            "--seed",
            "11",
            "--features",
            subset,
        ],
    )
    assert train.exit_code == 0, train.output
    return out
