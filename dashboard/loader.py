"""What the dashboard shows, loaded from the results store and cached on the store's version.

Why it looks like this:
- **Pure loaders, cached wrappers.** `load_overview`/`load_experiment` are plain functions from (store path,
  version) to frozen, picklable view objects; `cached_overview`/`cached_experiment` wrap them in
  `st.cache_data`. The version is part of the cache key, so an auto-refresh that finds the same
  `ResultsStore.version()` recomputes nothing, and any new record (the version only grows) recomputes
  everything once.
- **One source of numbers.** The experiment page is built from `experiment.results.report.build_report`, the model
  `abflow report` renders, so the dashboard and the exported files can never disagree.
- **Short-lived read-only connections.** DuckDB lets one process at a time hold a file that a writer has
  open. The collector opens the store per batch and retries while a reader holds it; the dashboard does the
  same from the other side: each load opens the file read-only, retries briefly while the collector writes,
  and closes it at once, so neither blocks the other for long.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from experiment.core.errors import ConfigError, InfraError
from experiment.results.report import FORMATS, build_report, write_report
from experiment.results.store import ResultsStore
from experiment.stats.analysis import AnalysisConfig, analyse

__all__ = [
    "LOAD_COUNTS",
    "DashboardSettings",
    "ExperimentRow",
    "ExperimentView",
    "Overview",
    "cached_experiment",
    "cached_overview",
    "export_reports",
    "load_experiment",
    "load_overview",
    "read_version",
    "settings_from_env",
]

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 10.0
SCORE_BINS = 20
LOCK_WAIT_S = 3.0

# How often each pure loader actually ran in this process: lets a test prove that an unchanged store version
# is served from the cache.
LOAD_COUNTS: collections.Counter[str] = collections.Counter()


@dataclass(frozen=True)
class DashboardSettings:
    """Where the data is and how the page behaves (from `abflow dashboard`'s flags via the environment)."""

    store_path: Path
    refresh_s: float = DEFAULT_REFRESH_S
    export_dir: Path = Path("reports")
    alpha: float = 0.05


def settings_from_env(env: dict[str, str] | None = None) -> DashboardSettings:
    """Read the settings from the environment that `abflow dashboard` prepares.

    `ABFLOW_STORE` (via `load_settings`), `ABFLOW_DASHBOARD_REFRESH` (seconds, 0 = off),
    `ABFLOW_DASHBOARD_EXPORT_DIR` and `ABFLOW_DASHBOARD_ALPHA`.
    """
    from experiment.runtime.config import load_settings

    env = dict(os.environ) if env is None else env
    store_path = load_settings(env=env).store_path
    raw_refresh = env.get("ABFLOW_DASHBOARD_REFRESH", str(DEFAULT_REFRESH_S))
    raw_alpha = env.get("ABFLOW_DASHBOARD_ALPHA", "0.05")
    try:
        refresh = float(raw_refresh)
        alpha = float(raw_alpha)
    except ValueError as error:
        raise ConfigError(
            f"ABFLOW_DASHBOARD_REFRESH and ABFLOW_DASHBOARD_ALPHA must be numbers; got "
            f"{raw_refresh!r} and {raw_alpha!r}"
        ) from error
    if refresh < 0:
        raise ConfigError(f"ABFLOW_DASHBOARD_REFRESH must be >= 0 seconds (0 = off); got {refresh}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"ABFLOW_DASHBOARD_ALPHA must lie strictly between 0 and 1; got {alpha}")
    export_dir = Path(env.get("ABFLOW_DASHBOARD_EXPORT_DIR") or "reports")
    return DashboardSettings(store_path=store_path, refresh_s=refresh, export_dir=export_dir, alpha=alpha)


@dataclass(frozen=True)
class ExperimentRow:
    """One line of the experiment list."""

    id: str
    name: str
    status: str
    traffic: float
    variants: str
    users: int
    planned: int | None
    progress: float | None
    days_running: int
    first_day: str | None
    last_day: str | None
    decision: str
    verdict_arm: str | None
    verdict: str
    srm_alarm: bool
    srm_p_value: float | None


@dataclass(frozen=True)
class Overview:
    """Everything the experiment list needs."""

    version: int
    experiments: tuple[ExperimentRow, ...]
    dead_letters: dict[str, int]


@dataclass(frozen=True)
class ExperimentView:
    """Everything an experiment's page needs: the report model plus the pipeline's health."""

    version: int
    row: ExperimentRow
    report: dict[str, Any]
    funnel: dict[str, dict[str, int]]
    score_histogram: tuple[tuple[float, float, int], ...]
    dead_letters: dict[str, int]


@contextlib.contextmanager
def _read_only(store_path: str | Path, wait_s: float | None = None) -> Iterator[ResultsStore]:
    """Open the store read-only, retrying for up to `wait_s` (default `LOCK_WAIT_S`) while a writer holds it."""
    deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
    while True:
        store = ResultsStore(store_path, read_only=True)
        try:
            store.open()
            break
        except InfraError as error:
            if time.monotonic() > deadline or not Path(store_path).exists():
                raise
            log.debug("store busy, retrying path=%s reason=%s", store_path, error)
            time.sleep(0.1)
    try:
        yield store
    finally:
        store.close()


def read_version(store_path: str | Path) -> int | None:
    """The store's data version, or None when there is no store file yet (the empty state)."""
    path = Path(store_path)
    if not path.exists():
        return None
    with _read_only(path) as store:
        return store.version()


def _row(store: ResultsStore, definition: dict[str, Any], alpha: float) -> ExperimentRow:
    experiment_id = str(definition["id"])
    config = AnalysisConfig.from_definition(definition, alpha=alpha)
    stats = store.variant_stats(experiment_id)
    daily = store.daily_stats(experiment_id)
    analysis = analyse(config, stats, [snapshot for _, snapshot in daily])
    target = analysis.planned_sample_size
    return ExperimentRow(
        id=experiment_id,
        name=str(definition.get("name") or experiment_id),
        status=str(definition.get("status", "unknown")),
        traffic=float(definition.get("traffic", 1.0)),
        variants=" / ".join(f"{v['name']} {float(v['weight']):.0%}" for v in definition.get("variants", [])),
        users=analysis.total_users,
        planned=target,
        progress=None if not target else analysis.total_users / target,
        days_running=len(daily),
        first_day=daily[0][0].isoformat() if daily else None,
        last_day=daily[-1][0].isoformat() if daily else None,
        decision=analysis.verdict.decision,
        verdict_arm=analysis.verdict.arm,
        verdict=analysis.verdict.explanation,
        srm_alarm=analysis.srm.alarm,
        srm_p_value=analysis.srm.p_value,
    )


def load_overview(store_path: str, version: int, alpha: float = 0.05) -> Overview:
    """Summarise every experiment in the store (`version` only keys the cache)."""
    LOAD_COUNTS["overview"] += 1
    with _read_only(store_path) as store:
        rows = tuple(_row(store, d, alpha) for d in store.experiments())
        dead = store.dead_letter_counts()
    log.info("overview loaded store=%s version=%d experiments=%d", store_path, version, len(rows))
    return Overview(version=version, experiments=rows, dead_letters=dead)


def load_experiment(store_path: str, experiment_id: str, version: int, alpha: float = 0.05) -> ExperimentView:
    """Load one experiment's page (`version` only keys the cache); raises `ExperimentError` if unknown."""
    LOAD_COUNTS["experiment"] += 1
    with _read_only(store_path) as store:
        report = build_report(store, experiment_id, alpha=alpha)
        row = _row(store, report["experiment"], alpha)
        funnel = store.funnel(experiment_id)
        histogram = tuple(store.score_histogram(experiment_id, SCORE_BINS))
        dead = store.dead_letter_counts()
    log.info("experiment loaded store=%s experiment_id=%s version=%d", store_path, experiment_id, version)
    return ExperimentView(
        version=version, row=row, report=report, funnel=funnel, score_histogram=histogram, dead_letters=dead
    )


def export_reports(store_path: str | Path, experiment_id: str, out_dir: str | Path, alpha: float = 0.05) -> list[Path]:
    """Write `report-<id>.<format>` for every format of `abflow report` into `out_dir`; returns the paths."""
    with _read_only(store_path) as store:
        model = build_report(store, experiment_id, alpha=alpha)
    return [write_report(model, fmt, Path(out_dir) / f"report-{experiment_id}.{fmt}") for fmt in FORMATS]


# Cached wrappers: every argument is part of the key, and `version` changes whenever the data does.
cached_overview = st.cache_data(show_spinner=False, max_entries=16)(load_overview)
cached_experiment = st.cache_data(show_spinner=False, max_entries=64)(load_experiment)
