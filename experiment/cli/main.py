"""The `abflow` console script: one Typer app that mounts one sub-app per command group.

Each command module keeps its heavy imports (xgboost, pyflink, duckdb) inside its functions so that `abflow --help`
stays fast.
"""

from __future__ import annotations

import typer

from experiment.cli import (
    cluster_cmd,
    collect_cmd,
    common,
    dashboard_cmd,
    data_cmd,
    experiment_cmd,
    kafka_cmd,
    models_cmd,
    pipeline_cmd,
    report_cmd,
    simulate_cmd,
    stats_cmd,
    train_cmd,
)

app = typer.Typer(
    name="abflow",
    help="A/B testing whose decisions are made in an Apache Flink job.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=common.AbflowGroup,
)

# Command groups register themselves here, one line each.
# (data, train, models, kafka, cluster, experiment, stats, report, pipeline, simulate, collect, dashboard)
app.command("stats")(stats_cmd.stats)
app.command("report")(report_cmd.report)
app.add_typer(data_cmd.app, name="data")
app.command("train")(train_cmd.train)
app.add_typer(models_cmd.app, name="models")
app.command("dashboard")(dashboard_cmd.dashboard)
app.command("simulate")(simulate_cmd.simulate)
app.command("collect")(collect_cmd.collect)
app.add_typer(kafka_cmd.app, name="kafka")
app.add_typer(cluster_cmd.app, name="cluster")
app.add_typer(experiment_cmd.app, name="experiment")
app.add_typer(pipeline_cmd.app, name="pipeline")


@app.callback()
def _root(
    verbose: common.Verbose = False,
) -> None:
    """abflow: train the model, run the experiment in Flink, and tell whether the lift is real."""
    common.configure_logging(verbose)


def main() -> None:
    """The console script: expected failures become one line on stderr and a non-zero exit code."""
    common.run(app)
