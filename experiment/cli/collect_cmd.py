"""`abflow collect`: read the Flink job's committed output into the DuckDB results store."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from experiment.cli.common import erased_on_failure

__all__ = ["collect"]


def collect(
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep collecting new records until interrupted (Ctrl-C).")
    ] = False,
    store: Annotated[Path | None, typer.Option("--store", help="Results store file (default: settings).")] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Ignore committed offsets and reread every topic.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds (exit 2 unless --follow).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as one JSON object.")] = False,
    batch_records: Annotated[
        int,
        typer.Option("--batch-records", min=1, help="Records per poll and store transaction (smaller: less memory)."),
    ] = 50_000,
) -> None:
    """Consume assignments, attributed outcomes, dead letters and experiments; stop when caught up."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from experiment.results.collector import CollectStats
    from experiment.results.collector import collect as run_collect
    from experiment.runtime.config import load_settings

    stop = {"now": False}

    def on_signal(_signum: int, _frame: object) -> None:
        stop["now"] = True

    previous = signal.signal(signal.SIGINT, on_signal) if follow else None
    console = Console(stderr=True)
    try:
        settings = load_settings({"store_path": store} if store else None)
        with erased_on_failure(
            Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console)
        ) as progress:
            task = progress.add_task("collect: connecting", total=None)

            def on_progress(stats: CollectStats, lag: int) -> None:
                progress.update(
                    task,
                    description=(
                        f"collect: {stats.assignments} assignments, {stats.outcomes} outcomes, "
                        f"{stats.dead_letters} dead letters, {stats.experiments} definitions; lag {lag}"
                    ),
                )

            stats = run_collect(
                settings,
                follow=follow,
                timeout_s=timeout,
                progress=on_progress,
                from_beginning=from_beginning,
                should_stop=lambda: stop["now"],
                batch_records=batch_records,
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if as_json:
        typer.echo(json.dumps(stats.as_dict(), sort_keys=True))
        return
    typer.echo(
        f"collected {stats.assignments} assignments, {stats.outcomes} attributed outcomes, "
        f"{stats.dead_letters} dead letters, {stats.experiments} experiment definitions "
        f"in {stats.elapsed_s:.1f} s into {settings.store_path}"
        + (f"; skipped {stats.skipped}: {stats.skipped_reasons}" if stats.skipped else "")
    )
