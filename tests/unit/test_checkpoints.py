"""Which snapshot a restart resumes from, pruning across runs, and the `pipeline run` choices (no JVM needed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core.errors import ConfigError
from flink_pipeline import checkpoints

JOB = "abflow-decisions"


def _snapshot(folder: Path, mtime: float, size: int = 100) -> Path:
    folder.mkdir(parents=True)
    metadata = folder / "_metadata"
    metadata.write_bytes(b"x" * size)
    os.utime(metadata, (mtime, mtime))
    return folder


def _layout(home: Path) -> dict[str, Path]:
    now = time.time()
    ckpt = checkpoints.checkpoint_root(home, JOB)
    save = checkpoints.savepoint_root(home, JOB)
    return {
        "old_run_1": _snapshot(ckpt / "run-a" / "chk-1", now - 500),
        "old_run_2": _snapshot(ckpt / "run-a" / "chk-2", now - 400),
        "savepoint": _snapshot(save / "savepoint-aa-01", now - 300),
        "new_run_5": _snapshot(ckpt / "run-b" / "chk-5", now - 200),
        "new_run_6": _snapshot(ckpt / "run-b" / "chk-6", now - 100),
    }


def test_newest_completed_snapshot_wins_across_runs_and_kinds(tmp_path: Path) -> None:
    made = _layout(tmp_path)
    (checkpoints.checkpoint_root(tmp_path, JOB) / "run-b" / "chk-7").mkdir()  # in progress: no _metadata yet
    newest = checkpoints.newest_snapshot(tmp_path, JOB)
    assert newest is not None and newest.path == made["new_run_6"] and newest.kind == "checkpoint"
    assert [s.path for s in checkpoints.list_snapshots(tmp_path, JOB)] == list(made.values())


def test_a_newer_savepoint_wins_over_older_checkpoints(tmp_path: Path) -> None:
    _layout(tmp_path)
    newer = _snapshot(checkpoints.savepoint_root(tmp_path, JOB) / "savepoint-bb-02", time.time())
    newest = checkpoints.newest_snapshot(tmp_path, JOB)
    assert newest is not None and newest.path == newer and newest.kind == "savepoint"


def test_nothing_to_resume_from(tmp_path: Path) -> None:
    assert checkpoints.newest_snapshot(tmp_path, JOB) is None


def test_prune_keeps_the_newest_checkpoints_and_every_savepoint(tmp_path: Path) -> None:
    made = _layout(tmp_path)
    deleted = checkpoints.prune_checkpoints(tmp_path, JOB, keep=2)
    assert set(deleted) == {made["old_run_1"], made["old_run_2"]}
    left = {s.path for s in checkpoints.list_snapshots(tmp_path, JOB)}
    assert left == {made["savepoint"], made["new_run_5"], made["new_run_6"]}


def test_prune_never_deletes_the_snapshot_being_restored(tmp_path: Path) -> None:
    made = _layout(tmp_path)
    checkpoints.prune_checkpoints(tmp_path, JOB, keep=1, protect=made["old_run_1"])
    left = {s.path for s in checkpoints.list_snapshots(tmp_path, JOB)}
    assert made["old_run_1"] in left and made["old_run_2"] not in left


def test_from_path_must_be_a_finished_snapshot(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such checkpoint"):
        checkpoints.snapshot_at(tmp_path / "missing")
    unfinished = tmp_path / "chk-9"
    unfinished.mkdir()
    with pytest.raises(ConfigError, match=r"chk-9.*no complete _metadata"):
        checkpoints.snapshot_at(unfinished)
    done = _snapshot(tmp_path / "savepoint-x", time.time())
    assert checkpoints.snapshot_at(done / "_metadata").kind == "savepoint"


def test_describe_names_path_age_and_size(tmp_path: Path) -> None:
    folder = _snapshot(tmp_path / "chk-3", 1_000.0, size=2048)
    text = checkpoints.describe(checkpoints.snapshot_at(folder), now=1_042.0)
    assert text == f"checkpoint {folder} (42 s old, 2.0 kB)"


def test_fresh_needs_confirmation_and_contradicts_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABFLOW_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    unconfirmed = runner.invoke(app, ["pipeline", "run", "--fresh"])
    assert unconfirmed.exit_code == 2 and "confirm with --yes" in unconfirmed.output
    both = runner.invoke(app, ["pipeline", "run", "--fresh", "--yes", "--from", str(tmp_path)])
    assert both.exit_code == 2 and "contradict" in both.output
    missing = runner.invoke(app, ["pipeline", "run", "--from", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such checkpoint" in missing.output


def test_savepoint_needs_a_running_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABFLOW_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["pipeline", "savepoint"])
    assert result.exit_code != 0 and "not running" in result.output


def test_status_when_stopped_names_the_snapshot_the_next_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("ABFLOW_HOME", str(home))
    made = _layout(home)
    result = CliRunner().invoke(app, ["pipeline", "status"])
    assert result.exit_code == 1
    assert f"next run resumes from checkpoint {made['new_run_6']}" in result.output
