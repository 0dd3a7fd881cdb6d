"""`abflow experiment create|launch|show|list` with a model per arm (champion vs challenger), without a broker.

The control plane is replaced by an in-memory topic (`_Topic`), so each test sees exactly the definition the command
would publish; the models are real tiny PMMLs with their cards, two different files so two different versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from experiment.cli.main import app
from experiment.core.definition import ArmModel, ExperimentDefinition, ModelRef
from tests.helpers.model_dir import write_model_dir
from tests.helpers.tiny_pmml import tiny_pmml

NO_BROKER = ["--bootstrap-servers", "127.0.0.1:1", "--topic-prefix", "unit."]
ARMS = "control:0.34,champion:0.33,challenger:0.33"


class _Topic:
    """The `experiments` topic in memory: what create publishes, get and list read, and launch changes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from experiment.kafka import control_plane

        self.definitions: dict[str, ExperimentDefinition] = {}
        monkeypatch.setattr(control_plane, "create", self._create)
        monkeypatch.setattr(control_plane, "get", lambda kafka, experiment_id: self.definitions[experiment_id])
        monkeypatch.setattr(control_plane, "apply_action", self._apply)
        monkeypatch.setattr(
            control_plane, "read_snapshot", lambda kafka: control_plane.Snapshot(dict(self.definitions))
        )

    def _create(self, kafka: Any, definition: ExperimentDefinition) -> ExperimentDefinition:
        self.definitions[definition.id] = definition
        return definition

    def _apply(self, kafka: Any, experiment_id: str, action: Any, *, now_ms: int) -> ExperimentDefinition:
        definition = self.definitions[experiment_id].transition(action, now_ms)
        self.definitions[experiment_id] = definition
        return definition


@pytest.fixture
def models(tmp_path: Path) -> dict[str, tuple[Path, ModelRef]]:
    """Two model directories with different PMML bytes (so different versions) and card thresholds 0.4 and 0.6."""
    out = {}
    for name, text, threshold in (("champion", tiny_pmml(), 0.4), ("challenger", tiny_pmml("lessOrEqual"), 0.6)):
        directory = tmp_path / name
        sha = write_model_dir(directory, pmml_text=text, threshold=threshold)
        out[name] = (directory, ModelRef(str((directory / "xgboost_model.pmml").resolve()), sha, ("a", "b")))
    assert out["champion"][1].model_version != out["challenger"][1].model_version
    return out


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["experiment", *args, *NO_BROKER])


def _create(*extra: str, variants: str = ARMS) -> Any:
    return _cli("create", "--id", "cc-v1", "--name", "cc", "--hypothesis", "h", "--owner", "o",
                "--category", "cat61", "--variants", variants, *extra)  # fmt: skip


def test_create_gives_each_model_arm_its_own_model_and_threshold(models, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = _Topic(monkeypatch)
    (d1, champion), (d2, challenger) = models["champion"], models["challenger"]
    result = _create("--model", f"champion={d1}", "--model", f"challenger={d2}", "--threshold", "challenger=0.45")
    assert result.exit_code == 0, result.output
    created = topic.definitions["cc-v1"]
    # The first model arm's model and card threshold are the experiment's; the challenger has its own.
    assert (created.model, created.threshold) == (champion, 0.4)
    assert created.arm_models == {"challenger": ArmModel(challenger, 0.45)}
    assert created.models() == {"champion": champion, "challenger": challenger}
    assert result.output.strip() == (
        "created cc-v1 version 1 draft (traffic 1; control 0.34, champion 0.33, challenger 0.33; category cat61; "
        f"threshold 0.4; champion model {champion.model_version[:12]} threshold 0.4, "
        f"challenger model {challenger.model_version[:12]} threshold 0.45)"
    )


def test_a_plain_model_and_threshold_are_the_default_of_every_model_arm(models, monkeypatch) -> None:
    topic = _Topic(monkeypatch)
    (d1, champion), (d2, challenger) = models["champion"], models["challenger"]
    assert _create("--model", str(d1), "--model", f"challenger={d2}").exit_code == 0
    created = topic.definitions["cc-v1"]
    # Without a threshold, the challenger takes its own card's (0.6), not the champion's.
    assert (created.model, created.threshold, created.arm_models) == (
        champion,
        0.4,
        {"challenger": ArmModel(challenger, 0.6)},
    )
    topic.definitions.clear()
    assert _create("--model", str(d1), "--model", f"challenger={d2}", "--threshold", "0.3").exit_code == 0
    created = topic.definitions["cc-v1"]
    assert (created.threshold_of("champion"), created.threshold_of("challenger")) == (0.3, 0.3)
    assert created.arm_models == {"challenger": ArmModel(challenger, 0.3)}
    topic.definitions.clear()
    assert _create("--model", str(d1), "--threshold", "champion=0.2").exit_code == 0
    created = topic.definitions["cc-v1"]
    assert (created.threshold_of("champion"), created.threshold_of("challenger")) == (0.2, 0.4)
    assert created.models() == {"champion": champion, "challenger": champion}


def test_one_model_for_every_arm_writes_the_definition_as_before(models, monkeypatch) -> None:
    topic = _Topic(monkeypatch)
    d1, champion = models["champion"]
    result = _create("--model", str(d1), "--segment-by", "a,b", variants="control:0.5,treatment:0.5")
    assert result.exit_code == 0, result.output
    created = topic.definitions["cc-v1"]
    assert created.arm_models == {} and "arm_models" not in created.to_dict()
    assert (created.model, created.threshold, created.segment_attributes) == (champion, 0.4, ("a", "b"))
    assert result.output.strip().endswith("; category cat61; threshold 0.4)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "champion={d1}"),
         "error: model arm(s) challenger have no model: give --model DIR for every model arm, or --model ARM=DIR "
         "for each (champion, challenger)."),
        ((), "error: model arm(s) champion, challenger have no model: give --model DIR for every model arm, or "
             "--model ARM=DIR for each (champion, challenger)."),
        (("--model", "{d1}", "--model", "nope={d2}"),
         "error: --model nope={d2} names 'nope', which is not an arm of this experiment (control, champion, "
         "challenger)."),
        (("--model", "{d1}", "--model", "control={d2}"),
         "error: --model control={d2} names the control 'control', which is never scored; model arms: champion, "
         "challenger."),
        (("--model", "{d1}", "--threshold", "control=0.3"),
         "error: --threshold control=0.3 names the control 'control', which is never scored; model arms: champion, "
         "challenger."),
        (("--model", "champion={d1}", "--model", "champion={d2}", "--model", "challenger={d2}"),
         "error: --model names arm 'champion' twice ({d1} and {d2})."),
        (("--model", "{d1}", "--model", "{d2}"),
         "error: --model {d1} and --model {d2}: only one default for every model arm; name the arm of the other: "
         "--model ARM={d2}."),
        (("--model", "{d1}", "--threshold", "challenger=high"),
         "error: --threshold must be a number or ARM=number. Got 'high'."),
        (("--model", "{d1}", "--segment-by", "cat3"),
         "error: Experiment 'cc-v1': segment attribute 'cat3' is not a feature of the experiment's models."),
    ],
)  # fmt: skip
def test_create_refuses_with_one_line(models, monkeypatch, args: tuple[str, ...], message: str) -> None:
    topic = _Topic(monkeypatch)
    paths = {"d1": models["champion"][0], "d2": models["challenger"][0]}
    result = _create(*(a.format(**paths) for a in args))
    assert (result.exit_code, result.output.strip()) == (2, message.format(**paths))
    assert topic.definitions == {}  # nothing was published


def _launch_case(models, monkeypatch) -> _Topic:
    topic = _Topic(monkeypatch)
    (d1, _), (d2, _) = models["champion"], models["challenger"]
    assert _create("--model", f"champion={d1}", "--model", f"challenger={d2}").exit_code == 0
    return topic


def test_launch_verifies_every_arms_model(models, monkeypatch) -> None:
    topic = _launch_case(models, monkeypatch)
    result = _cli("launch", "cc-v1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("launched cc-v1 version 2 running") and topic.definitions["cc-v1"].is_running


def test_launch_refuses_a_challenger_whose_pmml_changed_and_names_the_arm(models, monkeypatch) -> None:
    topic = _launch_case(models, monkeypatch)
    d2, challenger = models["challenger"]
    (d2 / "xgboost_model.pmml").write_text(tiny_pmml("greaterThan"), encoding="utf-8")
    result = _cli("launch", "cc-v1")
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith("error: arm challenger of experiment 'cc-v1': ") and len(line.splitlines()) == 1
    assert f"says model_version {challenger.model_version}; the PMML was changed after training." in line
    assert topic.definitions["cc-v1"].status == "draft"


def test_launch_refuses_a_challenger_that_failed_parity_and_names_the_arm(models, monkeypatch, tmp_path) -> None:
    topic = _Topic(monkeypatch)
    d1 = models["champion"][0]
    failed = tmp_path / "failed"
    write_model_dir(failed, parity_passed=False, pmml_text=tiny_pmml("greaterOrEqual"))
    assert _create("--model", str(d1), "--model", f"challenger={failed}").exit_code == 0
    result = _cli("launch", "cc-v1")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: arm challenger of experiment 'cc-v1': {failed / 'model.json'}: the PMML failed the parity gate "
        "(max |dP| = 0.2, 12 flips on 4000 rows); retrain before using it."
    )
    assert topic.definitions["cc-v1"].status == "draft"


def test_show_and_list_name_each_arms_model_and_threshold(models, monkeypatch, tmp_path) -> None:
    _launch_case(models, monkeypatch)
    champion, challenger = models["champion"][1], models["challenger"][1]
    result = _cli("show", "cc-v1", "--store", str(tmp_path / "no-store.duckdb"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["arm_models"]["challenger"]["model"]["model_version"] == challenger.model_version
    assert result.stderr.splitlines() == [
        f"arm champion: model {champion.model_version} threshold 0.4 ({champion.pmml_path})",
        f"arm challenger: model {challenger.model_version} threshold 0.6 ({challenger.pmml_path})",
    ]
    listed = _cli("list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.strip().endswith(
        f"champion model {champion.model_version[:12]} threshold 0.4, "
        f"challenger model {challenger.model_version[:12]} threshold 0.6)"
    )


def test_show_names_the_arm_whose_model_the_job_refuses(models, monkeypatch, tmp_path) -> None:
    from experiment.core import events
    from experiment.results.store import ResultsStore

    _launch_case(models, monkeypatch)
    champion, challenger = models["champion"][1], models["challenger"][1]
    store = tmp_path / "results.duckdb"
    reason = "PMML challenger.pmml has sha256 1234, but the experiment names another model_version: refusing"
    with ResultsStore(store) as results:
        results.record_batch(
            health=[
                events.experiment_health_record(
                    experiment_id="cc-v1", experiment_version=2, model_version=version, status=status,
                    reason=reason if status == "model_unusable" else None, ts=1_700_000_000_000,
                )
                for version, status in ((champion.model_version, "model_ready"),
                                        (challenger.model_version, "model_unusable"))
            ]
        )  # fmt: skip
    result = _cli("show", "cc-v1", "--store", str(store))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[2:] == [
        f"arm challenger: MODEL UNUSABLE in the job: {reason} (model {challenger.model_version}): the experiment "
        "assigns nobody"
    ]
