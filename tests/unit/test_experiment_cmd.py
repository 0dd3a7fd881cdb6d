"""`abflow experiment create` offline: arms in the wrong order are refused; the help says what the code does.

Definitions are validated before anything talks to Kafka, so these run without a broker (an unreachable address is
passed to prove it).
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core.definition import ExperimentDefinition
from experiment.stats.analysis import AnalysisConfig, analyse
from experiment.stats.sufficient import VariantStats as V
from tests.helpers.fill_store import definition_dict
from tests.helpers.model_dir import write_model_dir

NO_BROKER = ["--bootstrap-servers", "127.0.0.1:1", "--topic-prefix", "unit."]


def _create(model: Path, *extra: str) -> tuple[int, str]:
    args = ["experiment", "create", "--id", "cat61-v1", "--name", "Show cat61", "--hypothesis", "h", "--owner", "o",
            "--category", "cat61", "--model", str(model), *extra, *NO_BROKER]  # fmt: skip
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_treatment_listed_first_is_refused_with_exit_2_and_one_line(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "model")
    code, out = _create(tmp_path / "model", "--variants", "treatment:0.5,control:0.5")
    assert code == 2
    assert out.strip() == (
        "error: Experiment 'cat61-v1': the control must be the first declared variant. "
        "Got control='control' with variants treatment, control."
    )
    code, out = _create(tmp_path / "model", "--variants", "new:0.5,baseline:0.5", "--control", "baseline")
    assert code == 2 and len(out.strip().splitlines()) == 1 and "first declared variant" in out


def _create_help() -> dict[str, str]:
    """Each option's help text of `abflow experiment create`, as `--help` prints it."""
    create = typer.main.get_command(app).commands["experiment"].commands["create"]  # type: ignore[attr-defined]
    return {p.opts[0]: getattr(p, "help", None) or "" for p in create.params}


def test_planned_sample_size_help_and_verdict_mean_the_total_over_all_arms() -> None:
    help_text = _create_help()["--planned-sample-size"]
    assert "total" in help_text.lower() and "per variant" not in help_text
    config = AnalysisConfig.from_definition(
        ExperimentDefinition.from_dict(definition_dict(planned_sample_size=20_000, mde=None))
    )
    half = {"control": V.from_counts(5_000, 500), "treatment": V.from_counts(5_000, 500)}
    full = {"control": V.from_counts(10_000, 1_000), "treatment": V.from_counts(10_000, 1_000)}
    assert analyse(config, half).verdict.codes == ("not_enough_power",)
    # 10,000 per arm is 20,000 in total: the plan is reached (per variant it would be half-way).
    reached = analyse(config, full)
    assert (reached.planned_sample_size, reached.total_users) == (20_000, 20_000)
    assert reached.verdict.codes == ("no_significant_effect_at_planned_size",)


def test_mde_help_and_plan_mean_a_relative_lift() -> None:
    help_text = _create_help()["--mde"]
    assert "relative" in help_text and "absolute" not in help_text
    config = AnalysisConfig.from_definition(
        ExperimentDefinition.from_dict(definition_dict(planned_sample_size=None, mde=0.1))
    )
    analysis = analyse(config, {"control": V.from_counts(10_000, 1_000), "treatment": V.from_counts(10_000, 1_000)})
    # mde 0.1 on a 10 % control rate means 10 % -> 11 % (relative); absolute would mean 10 % -> 20 %.
    per_arm = NormalIndPower().solve_power(effect_size=abs(proportion_effectsize(0.11, 0.10)), alpha=0.05, power=0.8)
    absolute = NormalIndPower().solve_power(effect_size=abs(proportion_effectsize(0.20, 0.10)), alpha=0.05, power=0.8)
    assert analysis.planned_sample_size == 2 * math.ceil(per_arm)  # a total, over both arms
    assert analysis.planned_sample_size > 10 * 2 * math.ceil(absolute)
    assert analysis.target_source == "mde_at_observed_control_rate"
