"""`abflow simulate`: send ground-truth traffic for one experiment to Kafka and print each model arm's true lift."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from experiment.cli.common import erased_on_failure

if TYPE_CHECKING:
    from experiment.simulation.simulator import SimulationResult

__all__ = ["simulate", "summary_lines"]


def summary_lines(result: SimulationResult) -> list[str]:
    """The human summary: what was sent, per variant, and the exact true lift."""
    lines = [
        f"experiment {result.experiment_id}: {result.customers} customers "
        f"({result.customers_in_experiment} in the experiment) in {result.elapsed_s:.1f} s "
        f"({result.achieved_rate:,.0f} events/s, limit {result.rate_limit:,.0f})",
        f"sent: {result.sessions_sent} sessions, {result.outcomes_sent} purchases, "
        f"{result.malformed_sent} malformed events" + (f" {result.malformed_by_kind}" if result.malformed_sent else ""),
        "customers per variant: "
        + ", ".join(f"{v}={n}" for v, n in result.customers_per_variant.items())
        + f"; shown the category: {result.shown_customers}",
    ]
    if not result.completed:
        lines.append(f"stopped after --duration: {result.events_sent} of {result.events_planned} events sent")
    lifts = result.true_lifts or ([result.true_lift] if result.true_lift is not None else [])
    for lift in lifts:
        # One model arm against the control reads as it always did; more arms name what each line compares.
        what = "the treatment policy" if len(lifts) == 1 else f"{lift.arm} vs {lift.baseline}"
        lines.append(
            f"TRUE lift of {what} (ground truth, {lift.customers} customers): "
            f"conversion {lift.control_rate:.4%} -> {lift.treatment_rate:.4%}, "
            f"absolute {lift.abs_lift:+.4%} (percentage points {lift.abs_lift * 100:+.3f}), "
            f"relative {lift.rel_lift:+.2%}; revenue/user {lift.control_revenue_per_user:.3f} -> "
            f"{lift.treatment_revenue_per_user:.3f}"
        )
    control = lifts[0].baseline if lifts else None
    arms = [lift.arm for lift in lifts if lift.baseline == control]
    for dimension, segments in result.true_segment_lifts.items():
        # Each segment's lift of each model arm vs the control, in percentage points (the arm named when several).
        parts = [
            f"{value}{f' {lift.arm}' if len(arms) > 1 else ''} {lift.abs_lift * 100:+.2f}"
            for value, segment_lifts in segments.items()
            for lift in segment_lifts
            if lift.baseline == control
        ]
        lines.append(f"TRUE segment lifts by {dimension} vs {control} (percentage points): " + ", ".join(parts))
    return lines


def simulate(
    experiment: Annotated[str, typer.Option("--experiment", help="Id of a launched experiment.")],
    customers: Annotated[int, typer.Option("--customers", min=1, help="Customers to simulate.")] = 50_000,
    rate: Annotated[float, typer.Option("--rate", help="Upper bound on events sent per second.")] = 5_000.0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds even if not done.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the customers and their behaviour.")] = 1,
    malformed: Annotated[
        float, typer.Option("--malformed", help="Fraction of all events sent that are deliberately bad, in [0, 1).")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Send sessions and purchases drawn from the ground truth; print what was sent and each model arm's TRUE lift.

    Each model arm is decided with its own model and threshold; its true lift is given versus the control and,
    with several model arms, versus each earlier one (challenger vs champion).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from experiment.cli.simulate_io import run_simulation
    from experiment.runtime.config import load_settings
    from experiment.simulation.simulator import SimulationConfig

    config = SimulationConfig(customers=customers, rate=rate, duration_s=duration, seed=seed, malformed=malformed)
    console = Console(stderr=True)
    config.validate()
    settings = load_settings()
    with erased_on_failure(
        Progress(
            TextColumn("[bold]simulate[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
    ) as progress:
        task = progress.add_task("preparing", total=None)

        def on_stage(message: str) -> None:
            progress.update(task, description=message)

        def on_progress(sent: int, total: int) -> None:
            progress.update(task, completed=sent, total=total)

        result = run_simulation(settings, experiment, config, progress=on_progress, stage=on_stage)
        progress.update(task, description="done")
    if as_json:
        typer.echo(json.dumps(result.as_dict(), sort_keys=True))
    else:
        for line in summary_lines(result):
            typer.echo(line)
