"""What the dashboard shows, loaded from the results store and cached on the store's version.

Why it looks like this:
- **Pure loaders, cached wrappers.** `load_index`/`load_overview`/`load_experiment` are plain functions from (store
  path, version) to frozen, picklable values; `cached_index`/`cached_overview`/`cached_experiment` wrap them in
  `st.cache_data`. The version is part of the cache key, so an auto-refresh that finds the same
  `ResultsStore.version()` recomputes nothing, and any new record (the version only grows) recomputes everything
  once.
- **One source of numbers, computed once per page.** Every experiment's numbers come from
  `experiment.results.report.build_report`, the typed report `abflow report` renders, so the dashboard and the
  exported files can never disagree. A page builds only what it shows: the sidebar and the refresh schedule need
  just the definitions (`load_index`), the list one report per experiment, an experiment's page its one report
  (whose row, export and charts all read that same value), so each page runs the analysis once per experiment it
  shows.
- **Segments on demand.** The lift by segment is one store query per dimension, so the page asks for it only when
  the reader opens the Segments section and picks a dimension (`cached_segment_dimensions`, `cached_segments`,
  keyed on the version like the rest); the page itself never runs a segment query.
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

import streamlit as st

from experiment.core.definition import ExperimentDefinition
from experiment.core.errors import ConfigError, ExperimentError, InfraError
from experiment.results.report import FORMATS, Report, build_report, write_report
from experiment.results.report_model import ALL_SEGMENTS, SegmentDimension, build_segments, resolve_dimensions
from experiment.results.store import ResultsStore

__all__ = [
    "LIVE_STATUSES",
    "LOAD_COUNTS",
    "DashboardSettings",
    "ExperimentIndex",
    "ExperimentPage",
    "ExperimentRow",
    "Overview",
    "cached_experiment",
    "cached_index",
    "cached_overview",
    "cached_segment_dimensions",
    "cached_segments",
    "export_reports",
    "load_experiment",
    "load_index",
    "load_overview",
    "load_segment_dimensions",
    "load_segments",
    "read_version",
    "settings_from_env",
]

logger = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 10.0
SCORE_BINS = 20
LOCK_WAIT_S = 3.0
#: Statuses whose data still grows, so a page showing them refreshes itself.
LIVE_STATUSES = frozenset({"running"})

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
class ExperimentIndex:
    """The experiments in the store, without their numbers: what the sidebar and the refresh schedule need."""

    version: int
    definitions: tuple[ExperimentDefinition, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        """The experiment ids, sorted."""
        return tuple(d.id for d in self.definitions)

    def is_live(self, experiment_id: str | None = None) -> bool:
        """Whether that experiment (None: any experiment) is still gaining data, or the store has none yet."""
        if not self.definitions:
            return True  # waiting for the first data
        return any(
            d.status in LIVE_STATUSES for d in self.definitions if experiment_id is None or d.id == experiment_id
        )


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
class ExperimentPage:
    """Everything an experiment's page needs: its report plus the pipeline's health."""

    version: int
    row: ExperimentRow
    report: Report
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
            logger.debug("store busy, retrying path=%s reason=%s", store_path, error)
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


def _row(report: Report) -> ExperimentRow:
    """The list's line of one experiment, read off its report (no second analysis)."""
    definition, analysis, days = report.experiment, report.analysis, report.days
    return ExperimentRow(
        id=definition.id,
        name=definition.name,
        status=definition.status,
        traffic=definition.traffic,
        variants=" / ".join(f"{v.name} {v.weight:.0%}" for v in definition.variants),
        users=analysis.total_users,
        planned=report.sample_size.planned,
        progress=report.sample_size.progress,
        days_running=len(days),
        first_day=days[0] if days else None,
        last_day=days[-1] if days else None,
        decision=report.verdict.decision,
        verdict_arm=report.verdict.arm,
        verdict=report.verdict.explanation,
        srm_alarm=report.srm.alarm,
        srm_p_value=report.srm.p_value,
    )


def load_index(store_path: str, version: int) -> ExperimentIndex:
    """The experiments' definitions, no statistics (`version` only keys the cache)."""
    LOAD_COUNTS["index"] += 1
    with _read_only(store_path) as store:
        definitions = tuple(store.experiments())
    return ExperimentIndex(version=version, definitions=definitions)


def load_overview(store_path: str, version: int, alpha: float = 0.05) -> Overview:
    """Summarise every experiment in the store (`version` only keys the cache)."""
    LOAD_COUNTS["overview"] += 1
    with _read_only(store_path) as store:
        rows = tuple(_row(build_report(store, d.id, alpha=alpha)) for d in store.experiments())
        dead = store.dead_letter_counts()
    logger.info("overview loaded store=%s version=%d experiments=%d", store_path, version, len(rows))
    return Overview(version=version, experiments=rows, dead_letters=dead)


def load_experiment(store_path: str, experiment_id: str, version: int, alpha: float = 0.05) -> ExperimentPage:
    """Load one experiment's page (`version` only keys the cache); raises `ExperimentError` if unknown."""
    LOAD_COUNTS["experiment"] += 1
    with _read_only(store_path) as store:
        report = build_report(store, experiment_id, alpha=alpha)
        funnel = store.funnel(experiment_id)
        histogram = tuple(store.score_histogram(experiment_id, SCORE_BINS))
        dead = store.dead_letter_counts()
    logger.info("experiment loaded store=%s experiment_id=%s version=%d", store_path, experiment_id, version)
    return ExperimentPage(
        version=version, row=_row(report), report=report, funnel=funnel, score_histogram=histogram, dead_letters=dead
    )


def load_segment_dimensions(store_path: str, experiment_id: str, version: int) -> tuple[str, ...]:
    """The segment dimensions recorded for an experiment (`version` only keys the cache)."""
    LOAD_COUNTS["segment_dimensions"] += 1
    with _read_only(store_path) as store:
        return resolve_dimensions(store, experiment_id, [ALL_SEGMENTS])


def load_segments(
    store_path: str, experiment_id: str, dimension: str, version: int, alpha: float = 0.05
) -> SegmentDimension:
    """The lift by the segments of one dimension, as `abflow report --segments` computes it (one store query)."""
    LOAD_COUNTS["segments"] += 1
    with _read_only(store_path) as store:
        definition = store.experiment(experiment_id)
        if definition is None:
            raise ExperimentError(f"experiment '{experiment_id}' is not in the results store {store_path}")
        section = build_segments(store, definition, [dimension], alpha=alpha)
    logger.info(
        "segments loaded store=%s experiment_id=%s dimension=%s version=%d",
        store_path,
        experiment_id,
        dimension,
        version,
    )
    return section.dimensions[0]


def export_reports(report: Report, out_dir: str | Path) -> list[Path]:
    """Write `report-<id>.<format>` for every format of `abflow report` into `out_dir`; returns the paths.

    It writes the report the page shows (no new analysis), so the files say what the reader saw.
    """
    experiment_id = report.experiment.id
    return [write_report(report, fmt, Path(out_dir) / f"report-{experiment_id}.{fmt}") for fmt in FORMATS]


# Cached wrappers: every argument is part of the key, and `version` changes whenever the data does.
cached_index = st.cache_data(show_spinner=False, max_entries=16)(load_index)
cached_overview = st.cache_data(show_spinner=False, max_entries=16)(load_overview)
cached_experiment = st.cache_data(show_spinner=False, max_entries=64)(load_experiment)
cached_segment_dimensions = st.cache_data(show_spinner=False, max_entries=64)(load_segment_dimensions)
cached_segments = st.cache_data(show_spinner=False, max_entries=64)(load_segments)
