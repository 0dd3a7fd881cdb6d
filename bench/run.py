"""Run every benchmark in one process and write BENCHMARKS.md (machine, command, numbers, ratios).

Why one runner: numbers from a shared machine only mean something next to the machine's facts and a baseline
measured in the same run. Each benchmark module exposes `NAME`, `add_arguments(parser)`, `run(args)` and
`markdown(results, facts, command)` (optionally `LARGE_NAME` and `run(args, large=True)` for `--large`); add yours
to `BENCHMARKS`. Each writes its own section of BENCHMARKS.md between `<!-- bench:NAME:start -->` and
`<!-- bench:NAME:end -->`, so running one benchmark keeps the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "machine_facts", "main", "write_section"]

logger = logging.getLogger(__name__)

#: Benchmark modules, run in this order.
BENCHMARKS = [
    "bench.bench_scoring",
    "bench.bench_job",
    "bench.bench_latency",
    "bench.bench_state",
    "bench.bench_cluster",
    "bench.bench_report",
    "bench.bench_collect",
]

_HEADER = (
    "# Benchmarks\n\nWritten by `python -m bench.run` (`make bench`); "
    "each section is replaced when its benchmark runs.\n"
)


def machine_facts() -> dict[str, Any]:
    """nproc, CPU model (/proc/cpuinfo), RAM (/proc/meminfo), load average, Python: what a number depends on."""
    cpu = platform.processor() or "unknown"
    ram_gb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "load_avg": tuple(round(x, 2) for x in os.getloadavg()),
        "python": platform.python_version(),
    }


def _machine_line(facts: dict[str, Any]) -> str:
    return (
        f"Machine: nproc={facts['nproc']}, CPU {facts['cpu']}, RAM {facts['ram_gb']} GB, "
        f"Python {facts['python']}; load average at start {facts['load_avg']} (a shared machine: "
        "compare ratios within a run, not absolute numbers across runs)."
    )


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section of benchmark `name` in BENCHMARKS.md."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else _HEADER
    block = f"{start}\n## {name}\n\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m bench.run [--only NAME] [--out BENCHMARKS.md] [benchmark options]`."""
    modules = [importlib.import_module(name) for name in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", help="run only these benchmarks (by NAME)")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    for module in modules:
        module.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    command = "python -m bench.run" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv if argv is not None else sys.argv[1:])
    )
    for module in modules:
        if args.only and module.NAME not in args.only:
            continue
        variants: list[tuple[str, dict[str, Any]]] = [(module.NAME, {})]
        if getattr(args, "large", False) and hasattr(module, "LARGE_NAME"):
            variants.append((module.LARGE_NAME, {"large": True}))
        for name, options in variants:
            facts = machine_facts()
            started = time.perf_counter()
            results, details = module.run(args, **options)
            body = (
                f"{_machine_line(facts)}\n\nMeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"{time.perf_counter() - started:.0f} s.\n\n" + module.markdown(results, details, command)
            )
            write_section(args.out, name, body)
            logger.info("benchmark=%s written to %s", name, args.out)
            print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
