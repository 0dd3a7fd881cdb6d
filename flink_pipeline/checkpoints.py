"""Where the job's retained checkpoints and savepoints live, which one a restart resumes from, and pruning.

A restarted job must continue from its own last snapshot (keyed state *and* Kafka offsets together), never from
the consumer group's committed offsets with empty state: that silently drops the purchases of customers exposed
before the restart. Flink writes retained checkpoints as `<checkpoints>/<job id>/chk-<n>/_metadata` and savepoints
as `<savepoints>/savepoint-<id>/_metadata`; a snapshot is complete once its `_metadata` file exists. Every run of
the local job gets a new job id, so "the newest snapshot of this job" is the newest `_metadata` under the job's
own folders. No PyFlink import here: the CLI lists and prunes snapshots without starting a JVM.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from experiment.core.errors import ConfigError

__all__ = [
    "Snapshot",
    "checkpoint_root",
    "describe",
    "list_snapshots",
    "newest_snapshot",
    "prune_checkpoints",
    "savepoint_root",
    "snapshot_at",
]

SnapshotKind = Literal["checkpoint", "savepoint"]
_METADATA = "_metadata"


@dataclass(frozen=True)
class Snapshot:
    """One completed checkpoint or savepoint: its folder, kind, completion time (epoch s) and size in bytes."""

    path: Path
    kind: SnapshotKind
    completed_at: float
    size_bytes: int

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the snapshot completed."""
        return max(0.0, (time.time() if now is None else now) - self.completed_at)


def checkpoint_root(home: Path, job_name: str) -> Path:
    """Retained checkpoints of `job_name` (one sub-folder per run's job id)."""
    return home / "checkpoints" / job_name


def savepoint_root(home: Path, job_name: str) -> Path:
    """Savepoints of `job_name` (`pipeline stop` and `pipeline savepoint` write here)."""
    return home / "savepoints" / job_name


def _folder_size(folder: Path) -> int:
    return sum(item.stat().st_size for item in folder.rglob("*") if item.is_file())


def _snapshot(folder: Path, kind: SnapshotKind) -> Snapshot | None:
    metadata = folder / _METADATA
    try:
        stat = metadata.stat()
    except OSError:
        return None
    if stat.st_size == 0:
        return None
    return Snapshot(path=folder, kind=kind, completed_at=stat.st_mtime, size_bytes=_folder_size(folder))


def list_snapshots(home: Path, job_name: str) -> list[Snapshot]:
    """Every completed snapshot of the job, oldest first."""
    found: list[Snapshot] = []
    for folder in sorted(checkpoint_root(home, job_name).glob("*/chk-*")):
        snapshot = _snapshot(folder, "checkpoint")
        if snapshot is not None:
            found.append(snapshot)
    for folder in sorted(savepoint_root(home, job_name).glob("savepoint-*")):
        snapshot = _snapshot(folder, "savepoint")
        if snapshot is not None:
            found.append(snapshot)
    return sorted(found, key=lambda item: item.completed_at)


def newest_snapshot(home: Path, job_name: str) -> Snapshot | None:
    """The snapshot a restart resumes from: the most recently completed checkpoint or savepoint."""
    snapshots = list_snapshots(home, job_name)
    return snapshots[-1] if snapshots else None


def snapshot_at(path: Path) -> Snapshot:
    """The snapshot the user named with `--from`; an incomplete or missing one is an error that names it."""
    folder = path.parent if path.name == _METADATA else path
    if not folder.is_dir():
        raise ConfigError(f"cannot resume from '{path}': no such checkpoint or savepoint folder")
    kind: SnapshotKind = "savepoint" if folder.name.startswith("savepoint-") else "checkpoint"
    snapshot = _snapshot(folder, kind)
    if snapshot is None:
        raise ConfigError(
            f"cannot resume from '{folder}': it has no complete {_METADATA} file (an unfinished snapshot)"
        )
    return snapshot


def prune_checkpoints(home: Path, job_name: str, keep: int, *, protect: Path | None = None) -> list[Path]:
    """Delete all but the newest `keep` retained checkpoints of the job (savepoints are the user's: never pruned).

    Flink prunes within one run; across runs (each a new job id) the old runs' folders would pile up. `protect`
    (the snapshot being restored) is never deleted. Returns the deleted folders.
    """
    checkpoints = [item for item in list_snapshots(home, job_name) if item.kind == "checkpoint"]
    doomed = [item.path for item in checkpoints[: max(0, len(checkpoints) - keep)] if item.path != protect]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    for run in checkpoint_root(home, job_name).glob("*"):  # runs left with only Flink's shared/ and taskowned/
        unprotected = protect is None or run not in protect.parents
        if unprotected and run.is_dir() and not any(run.glob("chk-*")) and _older_than(run, 60.0):
            shutil.rmtree(run, ignore_errors=True)
    return doomed


def _older_than(folder: Path, seconds: float) -> bool:
    """A run folder younger than this may belong to a job that has not completed its first checkpoint yet."""
    try:
        return time.time() - folder.stat().st_mtime > seconds
    except OSError:
        return False


def describe(snapshot: Snapshot, now: float | None = None) -> str:
    """`checkpoint /…/chk-12 (42 s old, 1.3 MB)`: what `pipeline run` and `status` print."""
    return f"{snapshot.kind} {snapshot.path} ({_age(snapshot.age_s(now))} old, {_size(snapshot.size_bytes)})"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def _size(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
