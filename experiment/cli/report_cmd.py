"""`abflow report EXPERIMENT`: write a significance report from the results store.

The definition comes from the store's experiments table (the collector fills it from the `experiments` topic), so a
report needs nothing but the store file.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from experiment.core.errors import ExperimentError

if TYPE_CHECKING:
    from experiment.results.store import ResultsStore

__all__ = ["report"]

logger = logging.getLogger(__name__)

#: `experiment.results.report.FORMATS`, repeated so that a bad `--format` fails before the statistics load.
_FORMATS = ("md", "html", "json", "csv")


def _prefetch(store: ResultsStore, experiment: str, as_of_ms: int | None) -> None:
    """Fill the store's memo of the report's aggregates; a failure is left for `build_report` to raise and name."""
    try:
        store.prefetch(experiment, as_of_ms)
    except Exception as error:  # build_report runs the same query again and reports the error properly
        logger.debug("prefetch failed experiment_id=%s reason=%r", experiment, error)


def _dimensions(raw: str) -> list[str]:
    """`age_band, gender` → `["age_band", "gender"]`; nothing named is an error (checked against the store later)."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names:
        raise ExperimentError(
            f"--segments needs one or more dimensions, comma-separated (e.g. age_band,gender), or 'all'; got {raw!r}"
        )
    return names


def report(
    experiment: Annotated[str, typer.Argument(help="Experiment id, e.g. cat61-v1.")],
    fmt: Annotated[str, typer.Option("--format", help="Output format: md, html, json or csv.")] = "md",
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: reports/<id>.<format>).", show_default=False)
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Only data up to this time: ISO-8601 (a date = its end) or epoch ms."),
    ] = None,
    store: Annotated[Path | None, typer.Option("--store", help="Results store file (default: settings).")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    segments: Annotated[
        str | None,
        typer.Option(
            "--segments",
            help="Add the lift by segment for these dimensions, comma-separated (e.g. age_band,gender), or 'all'.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a report (definition, sample sizes, SRM, metrics by method, P(beat), CUPED, verdict) and summarise it.

    The file goes under `reports/` (git-ignored) unless `--out` says otherwise, so reports do not litter the working
    directory; the terminal gets the same summary the demo prints, then the path and the verdict on the last line.
    With several model arms the report compares them all (Holm) and gives P(best); `--segments` adds the lift by
    segment with the test of whether it differs between segments.
    """
    from experiment.results.store import ResultsStore, to_epoch_ms
    from experiment.runtime.config import load_settings

    if fmt not in _FORMATS:
        raise ExperimentError(f"--format must be one of {list(_FORMATS)}; got {fmt!r}")
    if not 0.0 < alpha < 1.0:
        raise ExperimentError(f"--alpha must lie strictly between 0 and 1; got {alpha}")
    try:
        as_of_ms = to_epoch_ms(as_of)
    except ValueError as error:
        raise ExperimentError(f"--as-of must be ISO-8601 or epoch ms; got {as_of!r} ({error})") from error
    dimensions = None if segments is None else _dimensions(segments)
    path = store or load_settings().store_path
    with ResultsStore(path, read_only=True) as results:
        # The store's aggregate pass (DuckDB, which releases the GIL) runs in a thread while the statistics
        # libraries load here; one after the other they were most of the command's time on a large store.
        prefetch = threading.Thread(target=_prefetch, args=(results, experiment, as_of_ms), daemon=True)
        prefetch.start()
        try:
            from rich.console import Console

            from experiment.results.report import REPORTS_DIR, build_report, print_summary, write_report
        finally:
            prefetch.join()
        model = build_report(results, experiment, as_of=as_of_ms, alpha=alpha, segments=dimensions)
    target = write_report(model, fmt, out or REPORTS_DIR / f"{experiment}.{fmt}")
    print_summary(Console(), model)
    verdict = model.verdict
    typer.echo(f"{target}: {verdict.decision}{' ' + verdict.arm if verdict.arm else ''}")
