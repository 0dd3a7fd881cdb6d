"""`abflow report` and the dashboard's experiment page on a large store: seconds per step, one run.

Why generated in DuckDB: ten million exposures as Python records would take longer to write than everything measured
here; `range()` in SQL fills the same tables in seconds. The data are shaped like the collector's: 2 arms, repeated
exposures per customer (only the first flagged `first_exposure`, and only it carrying the built-in segments), ~10 %
of customers convert (a few buy twice), integer-cent revenue, a pre-period purchase count correlated with
converting, timestamps over 14 days. Customer-level values come from `hash()` of the customer number, so every
exposure of a customer agrees.

What is timed: `build_report` (the analysis), each renderer (md, html, json, csv), the `abflow report` command as a
whole process (imports and writing included: what a user waits for), and the dashboard's experiment-page
load (`read_version` + `load_index` + `load_experiment`, the pure functions the page's cached wrappers call), plus
each store query alone (where the time goes). Wall seconds, best of `--report-repeats`; the store file is reused when
`--report-store` names one already holding that many exposures. Every timed step opens its own connection
(a cold start, as the CLI and each dashboard load do).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["NAME", "add_arguments", "fill", "main", "markdown", "run"]

logger = logging.getLogger(__name__)

NAME = "report"
EXPERIMENT_ID = "bench-report"
_DAY_MS = 86_400_000
_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_SMOKE_EXPOSURES = 20_000
_GOALS = {"report": 2.0, "dashboard": 3.0}
#: The previous design, measured in the same run: first exposures grouped from every assignment at query time.
_REFERENCE = "variant_stats, reference: first exposures derived from every assignment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (bench.run shares one parser)."""
    parser.add_argument("--report-exposures", type=int, default=10_000_000, help="assignments in the store")
    parser.add_argument(
        "--report-exposures-per-customer", type=float, default=2.0, help="average exposures per customer"
    )
    parser.add_argument("--report-repeats", type=int, default=2, help="repeats of each step (best counts)")
    parser.add_argument("--report-store", type=Path, default=None, help="store file to fill or reuse (default: temp)")
    parser.add_argument("--smoke", action="store_true", help=f"{_SMOKE_EXPOSURES:,} exposures (a quick check)")


def fill(path: Path, exposures: int, per_customer: float = 2.0) -> None:
    """Create a store at `path` holding one experiment with `exposures` assignments, generated in SQL."""
    from experiment.results.store import ResultsStore
    from tests.helpers.fill_store import definition_dict

    customers = max(1, int(exposures / per_customer))
    definition = definition_dict(EXPERIMENT_ID, planned_sample_size=customers)
    window = 14 * _DAY_MS
    with ResultsStore(path) as store:
        store.record_experiment(json.dumps(definition, sort_keys=True, separators=(",", ":")))
        con = store.con
        params = {"exp": EXPERIMENT_ID, "n": exposures, "c": customers, "start": _START_MS, "win": window}
        # Exposure i belongs to customer i % c; its k-th exposure (k = i // c) comes k hours after the first.
        con.execute(
            """
            INSERT INTO assignments
            SELECT $exp, 'e' || i, 1, 'c' || cust,
                   CASE WHEN hash(cust, 'arm') % 2 = 0 THEN 'control' ELSE 'treatment' END,
                   CASE WHEN hash(cust, 'arm') % 2 = 1 THEN (hash(i, 's') % 1000) / 1000.0 END,
                   CASE WHEN hash(cust, 'arm') % 2 = 1 THEN
                        CASE WHEN hash(i, 's') % 1000 >= 500 THEN 'show' ELSE 'hide' END END,
                   'm1', k = 0, ts, ts + 5, pre,
                   CASE WHEN k = 0 THEN json_object(  -- the collector's text: compact, keys sorted
                       'age_band', ['18-24', '25-34', '35-44', '45-54', '55-64', '65+']
                                   [(hash(cust, 'age') % 6)::BIGINT + 1],
                       'customer_type', CASE WHEN pre = 0 THEN 'new' ELSE 'returning' END,
                       'gender', ['woman', 'man', 'unstated'][(hash(cust, 'gender') % 3)::BIGINT + 1],
                       'history_tier', CASE WHEN pre = 0 THEN '0' WHEN pre <= 2 THEN '1-2'
                                            WHEN pre <= 9 THEN '3-9' ELSE '10+' END)::VARCHAR END
            FROM (SELECT i, i % $c AS cust, i // $c AS k,
                         $start + hash(i % $c, 'ts') % ($win - 4 * 86400000) + (i // $c) * 3600000 AS ts,
                         floor(-ln((hash(i % $c, 'pre') % 1000 + 0.5) / 1000.0) * 1.5)::BIGINT AS pre
                  FROM range($n) t(i))
            """,
            params,
        )
        # Converters: ~10 % in control, ~11 % in treatment, likelier with more pre-period purchases; a fifth buy
        # again a day later. Outcomes come after the first exposure (attributed), revenue log-normal-ish in cents.
        con.execute(
            """
            INSERT INTO outcomes
            WITH cust AS (
                SELECT cust, hash(cust, 'arm') % 2 AS arm,
                       $start + hash(cust, 'ts') % ($win - 4 * 86400000) AS first_ts,
                       floor(-ln((hash(cust, 'pre') % 1000 + 0.5) / 1000.0) * 1.5)::BIGINT AS pre
                FROM range($c) t(cust)
            ), buyers AS (
                SELECT * FROM cust
                WHERE hash(cust, 'conv') % 10000 < (800 + 200 * least(pre, 3) // 3) * (1 + arm * 0.1)
            )
            SELECT $exp, 'o' || cust || '-' || n, 'c' || cust,
                   CASE WHEN arm = 0 THEN 'control' ELSE 'treatment' END,
                   first_ts + 60000 + hash(cust, n, 'dt') % (2 * 86400000) + n * 86400000, true,
                   (exp(3 + 0.8 * sqrt(-2 * ln((hash(cust, n, 'r') % 1000 + 0.5) / 1000.0))) * 100)::BIGINT,
                   NULL
            FROM buyers, range(2) r(n)
            WHERE n = 0 OR hash(cust, 'again') % 5 = 0
            """,
            {k: v for k, v in params.items() if k != "n"},
        )
        store.rebuild_first_exposures()  # the rows went in by SQL, not through record_rows
        con.execute("CHECKPOINT")


def _stored_exposures(path: Path) -> int:
    from experiment.results.store import ResultsStore

    if not path.exists():
        return -1
    with ResultsStore(path, read_only=True) as store:
        row = store.con.execute("SELECT count(*) FROM assignments WHERE experiment_id = ?", [EXPERIMENT_ID]).fetchone()
    return int(row[0])


def _child_cpu(command: list[str]) -> float:
    """Run `command`; its CPU seconds (user + sys). Less sensitive than wall time to other load on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


def _measure(path: Path, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """(end-to-end steps, store queries alone), wall seconds, best of `repeats`."""
    from dashboard import loader
    from experiment.results.report import build_report, render
    from experiment.results.store import ResultsStore

    def report_cold() -> Any:
        with ResultsStore(path, read_only=True) as store:  # a fresh connection, as `abflow report` opens one
            return build_report(store, EXPERIMENT_ID)

    steps: dict[str, float] = {}
    steps["build_report"], report = _best(report_cold, repeats)
    for fmt in ("md", "html", "json", "csv"):
        steps[f"render {fmt}"], _ = _best(functools.partial(render, report, fmt), repeats)
        steps[f"in process: build_report + render {fmt}"] = steps["build_report"] + steps[f"render {fmt}"]

    abflow = Path(sys.executable).parent / "abflow"
    for fmt in ("md", "html", "json", "csv"):
        command = [str(abflow), "report", EXPERIMENT_ID, "--format", fmt, "--store", str(path)]
        command += ["--out", str(path.parent / f"bench-report.{fmt}")]
        steps[f"`abflow report --format {fmt}` (whole CLI process)"], cpu = _best(
            functools.partial(_child_cpu, command), repeats
        )
        steps[f"`abflow report --format {fmt}`: CPU seconds of its last run (user + sys, all threads)"] = cpu

    def page() -> Any:
        version = loader.read_version(path)
        assert version is not None
        loader.load_index(str(path), version)
        return loader.load_experiment(str(path), EXPERIMENT_ID, version)

    steps["dashboard experiment page (read_version + load_index + load_experiment)"], _ = _best(page, repeats)

    # Each query alone on a fresh connection (a read-only store reuses what one connection read, so a second call
    # on the same connection would time the memo, not the query).
    calls: dict[str, Callable[[ResultsStore], Any]] = {
        "variant_stats": lambda store: store.variant_stats(EXPERIMENT_ID),
        "daily_stats": lambda store: store.daily_stats(EXPERIMENT_ID),
        "last_event_ts": lambda store: store.last_event_ts(EXPERIMENT_ID),
        "funnel": lambda store: store.funnel(EXPERIMENT_ID),
        "score_histogram": lambda store: store.score_histogram(EXPERIMENT_ID),
        "version": lambda store: store.version(),
        _REFERENCE: lambda store: store.variant_stats(EXPERIMENT_ID),
    }
    queries: dict[str, float] = {}
    for name, call in calls.items():
        best = float("inf")
        for _ in range(max(1, repeats)):
            with ResultsStore(path, read_only=True, derive_first_exposures=name == _REFERENCE) as store:
                started = time.perf_counter()
                call(store)
                best = min(best, time.perf_counter() - started)
        queries[name] = best
    return steps, queries


def run(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, Any]]:
    """Fill (or reuse) the store, then time every step; returns (steps, facts incl. per-query seconds)."""
    exposures = _SMOKE_EXPOSURES if args.smoke else args.report_exposures
    with tempfile.TemporaryDirectory(prefix="abflow-bench-report-") as tmp:
        path = args.report_store or Path(tmp) / "results.duckdb"
        fill_s = 0.0
        if _stored_exposures(path) != exposures:
            path.unlink(missing_ok=True)
            started = time.perf_counter()
            fill(path, exposures, args.report_exposures_per_customer)
            fill_s = time.perf_counter() - started
            logger.info("store filled path=%s exposures=%d seconds=%.1f", path, exposures, fill_s)
        from experiment.results.store import ResultsStore

        started = time.perf_counter()
        with ResultsStore(path):  # a reused store written before `first_exposures` existed gets it here, once
            pass
        logger.info(
            "store opened writable (first_exposures filled if missing) seconds=%.1f", time.perf_counter() - started
        )

        with ResultsStore(path, read_only=True) as store:
            customers, outcomes = store.con.execute(
                "SELECT (SELECT count(DISTINCT customer_id) FROM assignments), (SELECT count(*) FROM outcomes)"
            ).fetchone()
        steps, queries = _measure(path, args.report_repeats)
    facts = {
        "exposures": exposures,
        "customers": int(customers),
        "outcomes": int(outcomes),
        "fill_s": round(fill_s, 1),
        "repeats": args.report_repeats,
        "queries": queries,
    }
    return steps, facts


def markdown(steps: dict[str, float], facts: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md section: the store's size, seconds per step against the goals, seconds per query."""
    report_worst = max(v for k, v in steps.items() if "whole CLI process" in k)
    page = next(v for k, v in steps.items() if k.startswith("dashboard"))
    lines = [
        f"Command: `{command}`",
        "",
        f"Store: {facts['exposures']:,} exposures (assignments) of {facts['customers']:,} customers, "
        f"{facts['outcomes']:,} attributed outcomes, generated in DuckDB"
        + (f" in {facts['fill_s']} s" if facts["fill_s"] else " (reused)")
        + f". Wall seconds, best of {facts['repeats']}.",
        "",
        "| step | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in steps.items()]
    lines += ["", "Store queries alone (where the time goes):", "", "| query | seconds |", "|---|---:|"]
    lines += [f"| `ResultsStore.{name}` | {seconds:.3f} |" for name, seconds in facts["queries"].items()]
    reference = facts["queries"].get(_REFERENCE)
    if reference:
        lines += [
            "",
            f"`variant_stats` reads the maintained `first_exposures` table in "
            f"{facts['queries']['variant_stats']:.3f} s against {reference:.3f} s grouping every exposure (the "
            "previous design, same run and store).",
        ]
    lines += [
        "",
        f"Goals: `abflow report` < {_GOALS['report']:g} s in every format — slowest {report_worst:.2f} s "
        f"({'met' if report_worst < _GOALS['report'] else 'NOT met'}); dashboard experiment page < "
        f"{_GOALS['dashboard']:g} s — {page:.2f} s ({'met' if page < _GOALS['dashboard'] else 'NOT met'}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone and print its section (bench.run writes BENCHMARKS.md)."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    steps, facts = run(args)
    print(markdown(steps, facts, "python -m bench.bench_report"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
