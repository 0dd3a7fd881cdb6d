"""`abflow stats`: exact JSON field names, values, table output, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app

FIELDS = {
    "control_rate",
    "treatment_rate",
    "abs_diff",
    "abs_ci",
    "rel_lift",
    "rel_ci",
    "p_value",
    "p_value_pooled",
    "srm_p_value",
    "prob_treatment_beats_control",
    "alpha",
    "method",
}


def test_json_has_design_fields_and_values() -> None:
    result = CliRunner().invoke(app, ["stats", "--control", "10000/1000", "--treatment", "10000/1100", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) >= FIELDS
    assert payload["control_rate"] == 0.1 and payload["treatment_rate"] == 0.11
    assert payload["p_value"] == pytest.approx(0.021058073216078, abs=1e-9)
    assert payload["p_value_pooled"] == pytest.approx(0.021075189273798, abs=1e-9)
    assert payload["srm_p_value"] == pytest.approx(1.0)
    assert payload["prob_treatment_beats_control"] == pytest.approx(0.98946, abs=1e-4)
    assert payload["alpha"] == 0.05 and isinstance(payload["method"], str)
    assert len(payload["abs_ci"]) == 2 and payload["reasons"] == {}


def test_weights_and_alpha_and_null_reasons() -> None:
    result = CliRunner().invoke(
        app,
        [
            "stats",
            "--control",
            "1000/0",
            "--treatment",
            "3000/10",
            "--weights",
            "0.25,0.75",
            "--alpha",
            "0.1",
            "--json",
        ],
    )
    payload = json.loads(result.stdout)
    assert payload["srm_p_value"] == pytest.approx(1.0) and payload["alpha"] == 0.1
    assert payload["rel_lift"] is None and payload["reasons"]["rel_lift"] == "zero_control_mean"


def test_table_output() -> None:
    result = CliRunner().invoke(app, ["stats", "--control", "10000/1000", "--treatment", "10000/1100"])
    assert result.exit_code == 0
    assert "p_value_pooled" in result.output and "10.000 %" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--control", "10/20", "--treatment", "10/1"], "more conversions (20) than users (10)"),
        (["--control", "-5/1", "--treatment", "10/1"], "non-negative"),
        (["--control", "10.5/1", "--treatment", "10/1"], "USERS/CONVERSIONS"),
        (["--control", "10", "--treatment", "10/1"], "USERS/CONVERSIONS"),
        (["--control", "10/1", "--treatment", "10/1", "--alpha", "1.5"], "--alpha"),
        (["--control", "10/1", "--treatment", "10/1", "--weights", "0.6,0.6"], "must sum to 1.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message) -> None:
    result = CliRunner().invoke(app, ["stats", *args, "--json"])
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: ")
