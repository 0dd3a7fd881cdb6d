"""The challenger options of `abflow train` (--seed, --grid, --features, --name): parsed and refused before training.

Nothing here fits a model: every refusal happens before the grid search (most before the data is even read), which
is what these tests prove by checking that no output directory appears.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from data import generator
from experiment.cli.main import app
from experiment.core.errors import ConfigError
from training import train as training
from training.train import (
    DEFAULT_SEED,
    FOLDS,
    FULL_GRID,
    GRIDS,
    QUICK_GRID,
    TrainConfig,
    parse_feature_list,
    resolve_grid,
    select_features,
    validate_config,
)

AVAILABLE = ("age", "man", "woman", "cat1", "cat2", "cat3", "cat4", "cat5", "cat6", "cat7", "cat8")


# ------------------------------------------------------------------ the pure option functions


def test_feature_list_is_split_on_commas_and_stripped_in_order() -> None:
    assert parse_feature_list("cat2, age ,man") == ("cat2", "age", "man")
    assert parse_feature_list("age") == ("age",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "without empty items. Got ''."),
        ("age,,man", "without empty items. Got 'age,,man'."),
        ("age,", "without empty items. Got 'age,'."),
        ("age,man,age,cat1,man", "--features names age, man more than once."),
    ],
)
def test_bad_feature_lists_are_refused_with_one_message(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_feature_list(text)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_select_features_keeps_all_columns_by_default_and_the_requested_order_otherwise() -> None:
    assert select_features(AVAILABLE, None) == list(AVAILABLE)
    assert select_features(AVAILABLE, ("cat5", "age", "cat2")) == ["cat5", "age", "cat2"]


def test_unknown_features_are_all_named_in_one_line() -> None:
    with pytest.raises(ConfigError) as error:
        select_features(AVAILABLE, ("age", "cat99", "gender", "cat1"))
    assert str(error.value) == (
        "Unknown feature(s) in --features: cat99, gender. "
        "The data has age, man, woman, cat1, cat2, cat3, ... (11 in all)."
    )


def test_an_empty_selection_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one feature"):
        select_features(AVAILABLE, ())


@pytest.mark.parametrize(
    ("quick", "grid", "expected"),
    [(False, None, "default"), (True, None, "quick"), (True, "quick", "quick"), (False, "wide", "wide")],
)
def test_grid_name_from_quick_and_grid(quick: bool, grid: str | None, expected: str) -> None:
    assert resolve_grid(quick, grid) == expected
    assert TrainConfig(quick=quick, grid=grid).grid_name == expected


def test_quick_and_another_grid_contradict_and_unknown_grids_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^--quick means --grid quick, but --grid wide was given"):
        resolve_grid(True, "wide")
    with pytest.raises(ConfigError, match=r"^Unknown --grid 'huge'; choose one of quick, default, wide\.$"):
        resolve_grid(False, "huge")


def test_the_named_grids_keep_todays_search_unchanged() -> None:
    # Existing models must stay reproducible: default is the documented full grid, quick the 2x2 one with 3 folds.
    assert GRIDS["default"] is FULL_GRID and GRIDS["quick"] is QUICK_GRID
    assert len(list(_product(FULL_GRID))) == 32 and FOLDS["default"] == 5
    assert len(list(_product(QUICK_GRID))) == 4 and FOLDS["quick"] == 3
    assert len(list(_product(GRIDS["wide"]))) == 72 and FOLDS["wide"] == 5
    assert TrainConfig().random_state == DEFAULT_SEED == 7


def _product(grid: dict[str, list[object]]) -> list[tuple[object, ...]]:
    import itertools

    return list(itertools.product(*grid.values()))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TrainConfig(threshold=1.0), "The decision threshold must be in (0, 1). Got 1.0."),
        (TrainConfig(random_state=-1), "--seed must be an integer in [0, 2**32 - 1]. Got -1."),
        (TrainConfig(random_state=2**32), "--seed must be an integer in [0, 2**32 - 1]. Got 4294967296."),
        (TrainConfig(name=""), "--name must be 1 to 64 printable characters on one line. Got ''."),
        (TrainConfig(name="a\nb"), "--name must be 1 to 64 printable characters on one line. Got 'a\\nb'."),
        (TrainConfig(name="x" * 65), "--name must be 1 to 64 printable characters"),
        (TrainConfig(grid="huge"), "Unknown --grid 'huge'"),
    ],
)
def test_validate_config_refuses_bad_options(config: TrainConfig, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert message in str(error.value)


def test_good_options_pass_validation() -> None:
    validate_config(TrainConfig(random_state=0, grid="wide", name="challenger", features=("age", "cat1")))
    validate_config(TrainConfig(random_state=2**32 - 1, quick=True, grid="quick", name="v2 (seed 11)"))


# ------------------------------------------------------------------ the entry points refuse before training


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    generator.write(generator.generate(customers=200, categories=7, seed=1), directory)
    return directory


def _train(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_unknown_feature_is_one_line_exit_2_and_writes_nothing(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    code, stdout, stderr = _train("--data", str(tiny_data), "--out", str(out), "--quick", "--features", "age,cat9,foo")
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        "error: Unknown feature(s) in --features: cat9, foo. "
        "The data has age, man, woman, cat1, cat2, cat3, ... (10 in all)."
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--quick", "--grid", "wide"), "error: --quick means --grid quick, but --grid wide was given; "
                                        "use one of them."),
        (("--grid", "huge"), "error: Unknown --grid 'huge'; choose one of quick, default, wide."),
        (("--seed", "-3"), "error: --seed must be an integer in [0, 2**32 - 1]. Got -3."),
        (("--features", "age,,man"), "error: --features must be comma-separated feature names without empty items. "
                                     "Got 'age,,man'."),
        (("--name", "   "), "error: --name must be 1 to 64 printable characters on one line. Got '   '."),
    ],
)  # fmt: skip
def test_cli_bad_options_are_refused_before_the_data_is_read(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "model"
    code, stdout, stderr = _train("--data", str(tmp_path / "no-data-here"), "--out", str(out), *args)
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [message]  # the options, not the missing data, are the error
    assert not out.exists()


def test_cli_seed_default_is_the_training_default() -> None:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    assert params["seed"].default == DEFAULT_SEED
    assert {"seed", "grid", "features", "name", "quick"} <= set(params)


def test_script_entry_point_accepts_the_same_options_and_refuses_the_same_way(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = training._parse(
        ["--data", "d", "--seed", "11", "--grid", "wide", "--features", "age, cat1", "--name", "challenger"]
    )
    assert (config.random_state, config.grid_name, config.features, config.name) == (
        11,
        "wide",
        ("age", "cat1"),
        "challenger",
    )
    out = tmp_path / "model"
    code = training.main(["--data", str(tiny_data), "--out", str(out), "--quick", "--features", "age,bogus"])
    assert code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Unknown feature(s) in --features: bogus.")
    )
    assert training.main(["--data", str(tiny_data), "--out", str(out), "--features", "age,,x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --features must be comma-separated feature names without empty items. Got 'age,,x'."
    )
    assert not out.exists()
