"""Every benchmark of `bench.run` still runs: a tiny run of each into a temporary BENCHMARKS file.

Why in the suite: benchmarks are run by hand, rarely, so a refactor that breaks one goes unnoticed until someone needs
the numbers. Here each runs through the real runner at a smoke size and must write its section with numbers in it.
Speed is not judged (the machine is shared); only that the section exists and holds numbers. Each benchmark runs
with its own smoke option (found by name, `--...smoke`), on the session's broker when it takes one; a benchmark
without a smoke option is skipped with that reason.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench import run
from experiment.runtime.config import KafkaSettings

#: Options of benchmarks that have no smoke flag but can be made small (without `--only` and `--out`).
EXTRA_ARGS: dict[str, list[str]] = {
    # No model in a fresh checkout: the benchmark generates data and quick-trains one (what CI does too).
    "bench.bench_scoring": ["--baseline-rows", "20", "--repeats", "1"],
    "bench.bench_report": ["--report-repeats", "1"],
}


def _options(module: ModuleType) -> list[str]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return [option for action in parser._actions for option in action.option_strings]


def _smoke_flag(module: ModuleType) -> str | None:
    """The benchmark's own smoke option (`--smoke`, `--collect-smoke`, ...), if it has one."""
    return next((o for o in _options(module) if o.endswith("smoke")), None)


def _bootstrap_flag(module: ModuleType) -> str | None:
    """Its option to use a given broker instead of starting one: the session's broker is used."""
    return next((o for o in _options(module) if o.endswith("-bootstrap")), None)


def _param(name: str) -> Any:
    module = importlib.import_module(name)
    marks = [pytest.mark.slow]
    if _bootstrap_flag(module):
        marks.append(pytest.mark.kafka)
    source = Path(module.__file__ or "").read_text()
    if "flink_pipeline" in source or "pyflink" in source:
        marks.append(pytest.mark.flink)
    if name == "bench.bench_cluster":
        marks.append(pytest.mark.cluster)  # starts a whole local cluster: the cluster tier runs it
    if name == "bench.bench_scoring":
        marks.append(pytest.mark.training)  # quick-trains a model
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("module_name", [_param(name) for name in run.BENCHMARKS])
def test_benchmark_smoke_run_writes_its_section_with_numbers(
    module_name: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module(module_name)
    smoke = _smoke_flag(module)
    if smoke is None and module_name not in EXTRA_ARGS:
        pytest.skip(f"{module_name} has no smoke-size option (`--...-smoke`); add one there to run it here")
    out = tmp_path / "BENCHMARKS.md"
    args = ["--only", module.NAME, "--out", str(out), *([smoke] if smoke else []), *EXTRA_ARGS.get(module_name, [])]
    bootstrap = _bootstrap_flag(module)
    if bootstrap:
        kafka: KafkaSettings = request.getfixturevalue("kafka_broker")
        args += [bootstrap, kafka.bootstrap_servers]
    if module_name == "bench.bench_scoring":  # never the working tree's data/ or artifacts/: a fresh quick model
        args += ["--data", str(tmp_path / "no-data"), "--model", str(tmp_path / "no-model")]
    monkeypatch.chdir(tmp_path)  # anything a benchmark writes relative to the working directory lands here

    assert run.main(args) == 0

    text = out.read_text()
    section = re.search(rf"<!-- bench:{module.NAME}:start -->(.*?)<!-- bench:{module.NAME}:end -->", text, re.S)
    assert section is not None, text
    body = section.group(1)
    assert f"## {module.NAME}" in body and "Machine: nproc=" in body
    table_rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    numbers = [float(n.replace(",", "")) for row in table_rows[1:] for n in re.findall(r"\b\d[\d,]*\.?\d*\b", row)]
    assert len(table_rows) >= 2 and numbers and any(n > 0 for n in numbers), body
