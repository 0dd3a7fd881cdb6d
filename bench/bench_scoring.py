"""Scoring throughput on the model's test set: pypmml (row by row, batch) against the compiled scorer, one run.

Why in one run: the machine is shared, so only ratios against a baseline measured in the same process and minute
mean anything. The baseline is pypmml's per-record API through py4j (what the seed did), on `--baseline-rows`
rows. Throughput is rows / CPU seconds of this process (`time.process_time`, robust to other load on a shared
machine; the pypmml rows count the JVM's work too, because py4j makes this process wait for it, so wall time is
reported as well for those). Compiled paths report the best of `--repeats` runs.

Uses `data/` and `artifacts/model/` when present; otherwise generates data and quick-trains a model in a temporary
directory with the training code.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LARGE_NAME", "NAME", "Measurement", "add_arguments", "main", "markdown", "run"]

logger = logging.getLogger(__name__)

NAME = "scoring"
LARGE_NAME = "scoring-large-model"


@dataclass(frozen=True)
class Measurement:
    """One timed path: rows scored, seconds (wall and CPU), rows per second used for ratios."""

    path: str
    rows: int
    wall_s: float
    cpu_s: float
    rows_per_s: float
    basis: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (bench.run shares one parser)."""
    parser.add_argument("--data", type=Path, default=Path("data"), help="data dir with X_test.csv")
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"), help="dir with xgboost_model.pmml")
    parser.add_argument("--baseline-rows", type=int, default=500, help="rows for pypmml row by row")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each compiled path (best counts)")
    parser.add_argument(
        "--large",
        action="store_true",
        help="also bench a 300-tree, depth-6 model (the full grid's largest) trained here on default-size data",
    )


def _timed(fn: Callable[[], Any], rows: int, repeats: int, path: str, basis: str = "cpu") -> Measurement:
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    wall, cpu = min(walls), min(cpus)
    seconds = cpu if basis == "cpu" else wall
    return Measurement(path, rows, wall, cpu, rows / seconds if seconds > 0 else float("inf"), basis)


def _model_and_data(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path, str]:
    pmml = args.model / "xgboost_model.pmml"
    if pmml.is_file() and (args.data / "X_test.csv").is_file():
        from experiment.model.card import load_model_card

        card = load_model_card(args.model)
        card.verify_pmml()  # the XML gate and model.json's sha256, before anything reads the PMML
        pmml = card.pmml_path
        return pmml, args.data, f"{pmml} (existing), test set {args.data / 'X_test.csv'}"
    from data.generator import generate, write
    from training.train import TrainConfig, train

    logger.info("no model/data found; generating data and quick-training in %s", workdir)
    write(generate(), workdir / "data")
    result = train(TrainConfig(data_dir=workdir / "data", out_dir=workdir / "model", quick=True))
    return result.files["pmml"], workdir / "data", "freshly generated (default size) and --quick trained model"


def _large_model(workdir: Path) -> tuple[Path, Path, str]:
    """Pipeline(StandardScaler, XGBClassifier(300 trees, depth 6)) exported by nyoka and corrected by pmml_fix."""
    from nyoka import xgboost_to_pmml
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    from data.generator import generate, write
    from experiment.model.pmml_fix import fix_pmml
    from training.dataset import load_split

    write(generate(), workdir / "data")
    x_train, y_train = load_split(workdir / "data", "train")
    xgb = XGBClassifier(n_estimators=300, max_depth=6, learning_rate=0.05, tree_method="hist", random_state=7)
    pipeline = Pipeline([("scaler", StandardScaler()), ("xgb", xgb)]).fit(x_train, y_train)
    raw = workdir / "raw.pmml"
    xgboost_to_pmml(pipeline, list(x_train.columns), "label", str(raw))
    fixed, _report = fix_pmml(raw.read_bytes(), pipeline, list(x_train.columns))
    pmml = workdir / "xgboost_model.pmml"
    pmml.write_bytes(fixed)
    return pmml, workdir / "data", "300 trees × depth 6 (--large), default-size generated data"


def run(args: argparse.Namespace, *, large: bool = False) -> tuple[list[Measurement], dict[str, Any]]:
    """All measurements of this benchmark, plus facts about the model and the verification."""
    from experiment.model.compiled import compile_pmml
    from experiment.model.digest import sha256_file
    from experiment.model.reference import PmmlReference
    from flink_pipeline.scoring import clear_scorer_cache, load_verified_scorer
    from training.dataset import load_split

    with tempfile.TemporaryDirectory(prefix="abflow-bench-") as tmp:
        pmml, data_dir, origin = _large_model(Path(tmp)) if large else _model_and_data(args, Path(tmp))
        x_test, _ = load_split(data_dir, "test")
        matrix = x_test.to_numpy(dtype=np.float64)
        records = x_test.to_dict("records")  # python ints, as parsed from JSON sessions
        n = len(x_test)
        baseline_rows = records[: args.baseline_rows]

        clear_scorer_cache()
        w0 = time.perf_counter()
        scorer = load_verified_scorer(pmml, sha256_file(pmml), data_dir)
        verify_s = time.perf_counter() - w0
        c0 = time.process_time()
        compiled = compile_pmml(pmml.read_bytes(), source=str(pmml))
        compile_cpu_s = time.process_time() - c0

        results: list[Measurement] = []
        with PmmlReference(pmml) as reference:
            reference.predict_one(records[0])  # warm the JVM path
            results.append(
                _timed(
                    lambda: [reference.predict_one(r) for r in baseline_rows],
                    len(baseline_rows),
                    1,
                    "pypmml row by row (py4j) — baseline",
                    basis="wall",
                )
            )
            reference.predict(matrix[:100])
            results.append(
                _timed(lambda: reference.predict(matrix), n, 2, "pypmml batch (one JSON call)", basis="wall")
            )
        results.append(_timed(lambda: scorer.score_batch(matrix), n, args.repeats, "compiled batch, whole test set"))
        for bundle in (100, 1000):

            def bundles(size: int = bundle) -> None:
                for start in range(0, n, size):
                    scorer.score_batch(matrix[start : start + size])

            results.append(_timed(bundles, n, args.repeats, f"compiled batch, bundles of {bundle}"))
        results.append(
            _timed(lambda: [scorer.score_one(r) for r in records], n, args.repeats, "compiled per record (score_one)")
        )
        facts = {
            "model": origin,
            "model_version": scorer.model_version,
            "trees": compiled.spec.n_trees,
            "max_depth": compiled.depth,
            "features": len(compiled.feature_names),
            "test_rows": n,
            "verify_wall_s": round(verify_s, 2),
            "verify_rows": scorer.parity.rows if scorer.parity else 0,
            "verify_max_abs_diff": scorer.parity.max_abs_diff if scorer.parity else None,
            "verify_pypmml_s": round(scorer.parity.reference_seconds, 2) if scorer.parity else None,
            "compile_cpu_s": round(compile_cpu_s, 3),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        return results, facts


def markdown(results: list[Measurement], facts: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md section: command, model facts, the table and ratios against the baseline."""
    base = results[0].rows_per_s
    lines = [
        f"Command: `{command}`",
        "",
        f"Model: {facts['model']}; {facts['trees']} trees, depth ≤ {facts['max_depth']}, "
        f"{facts['features']} features; test set {facts['test_rows']} rows.",
        f"Load + verify (`load_verified_scorer`, cold): {facts['verify_wall_s']} s wall for "
        f"{facts['verify_rows']} rows (test set + probe rows), of which pypmml batch {facts['verify_pypmml_s']} s; "
        f"max |ΔP| = {facts['verify_max_abs_diff']:.3g}. Compiling alone: {facts['compile_cpu_s']} s CPU.",
        "",
        "| path | rows | wall s | CPU s | rows/s | basis | × baseline |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for m in results:
        lines.append(
            f"| {m.path} | {m.rows:,} | {m.wall_s:.4f} | {m.cpu_s:.4f} | {m.rows_per_s:,.0f} | "
            f"{m.basis} | {m.rows_per_s / base:,.1f} |"
        )
    floor = max(r.rows_per_s for r in results if r.path.startswith("compiled batch"))
    lines += [
        "",
        f"Target: scoring path ≥ 100,000 rows/s on the test set, equal to pypmml: "
        f"{'met' if floor >= 100_000 else 'NOT met'} (best compiled batch {floor:,.0f} rows/s, "
        f"per record {results[-1].rows_per_s:,.0f} rows/s; equality is the max |ΔP| above).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone and print its section (bench.run writes BENCHMARKS.md)."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    results, facts = run(args)
    print(markdown(results, facts, "python -m bench.bench_scoring"))
    print(json.dumps({"facts": facts, "results": [m.__dict__ for m in results]}, default=str, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
