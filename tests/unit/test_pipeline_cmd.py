from __future__ import annotations

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.cli.pipeline_cmd import parse_interval_ms
from experiment.core.errors import ConfigError
from flink_pipeline.job import JobConfig, config_from_args, parse_args


@pytest.mark.parametrize(
    ("text", "ms"), [("2s", 2_000), ("500ms", 500), ("1m", 60_000), ("2500", 2_500), ("1.5s", 1_500)]
)
def test_checkpoint_interval_parsing(text: str, ms: int) -> None:
    assert parse_interval_ms(text) == ms


def test_bad_interval_names_the_input() -> None:
    with pytest.raises(ConfigError, match="Got 'soon'"):
        parse_interval_ms("soon")


def test_status_and_stop_when_nothing_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ABFLOW_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    status = runner.invoke(app, ["pipeline", "status"])
    assert status.exit_code == 1 and "pipeline: not running" in status.output
    stop = runner.invoke(app, ["pipeline", "stop"])
    assert stop.exit_code == 0 and "the pipeline is not running" in stop.output


def test_job_flags_become_a_validated_config() -> None:
    config = config_from_args(
        parse_args(
            [
                "--parallelism",
                "3",
                "--checkpoint-interval-ms",
                "5000",
                "--execution-mode",
                "process",
                "--categories",
                "10",
            ]
        )
    )
    assert (config.parallelism, config.checkpoint_interval_ms, config.execution_mode, config.categories) == (
        3,
        5_000,
        "process",
        10,
    )
    with pytest.raises(ConfigError, match="parallelism must be >= 1"):
        config_from_args(parse_args(["--parallelism", "0"]))


def test_state_backend_flag_is_validated() -> None:
    assert config_from_args(parse_args([])).state_backend == "hashmap"
    assert config_from_args(parse_args(["--state-backend", "rocksdb"])).state_backend == "rocksdb"
    with pytest.raises(SystemExit):
        parse_args(["--state-backend", "memory"])
    with pytest.raises(ConfigError, match="state backend must be 'hashmap' or 'rocksdb'"):
        JobConfig(state_backend="memory").validate()  # type: ignore[arg-type]
