"""Submit the unchanged decision job to a Flink cluster with the `flink` CLI of the PyFlink wheel.

Why the CLI and not a jar upload: a Python job is planned by running its Python module on the client (`flink run
--python`), which needs a Flink client anyway; the CLI also ships what a TaskManager on another machine needs with the
job itself: the project's code (`-pyfs`, a staged copy of `experiment/` and `flink_pipeline/`), the Kafka connector jar
(`--jarfile`), and which Python runs the operators (`-pyexec`, with its site-packages on `python.pythonpath`, which
thread mode needs because the embedded interpreter does not see a virtualenv by itself).

The job's arguments are those of `flink_pipeline.job.parse_args`; a snapshot to resume from is passed both as `-s`
(the CLI's restore setting) and as the job's own `--restore-from`.
"""

from __future__ import annotations

import logging
import os
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from experiment.cluster.flink_standalone import client_conf_dir, flink_home
from experiment.core.errors import ConfigError, InfraError
from experiment.kafka.jars import flink_connector_jar
from experiment.runtime.config import Settings

__all__ = ["jobmanager_address", "stage_python_files", "submit_job", "wait_running"]

logger = logging.getLogger(__name__)

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = ("experiment", "flink_pipeline")


def jobmanager_address(cluster_url: str) -> str:
    """`http://host:port` → `host:port`, what `flink run -m` takes; a URL without a port is an error."""
    parsed = urlparse(cluster_url if "://" in cluster_url else f"http://{cluster_url}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.port is None:
        raise ConfigError(
            f"--cluster must look like http://HOST:PORT (the JobManager's REST address). Got {cluster_url!r}."
        )
    return f"{parsed.hostname}:{parsed.port}"


def stage_python_files(target: Path) -> Path:
    """A fresh copy of the job's packages under `target`, the folder `-pyfs` ships (no caches, no tests, no venv)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for package in _PACKAGES:
        shutil.copytree(
            _PROJECT_ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return target


def _site_packages(python: str) -> str:
    """The site-packages of `python`, asked of that interpreter (it may be another one than this CLI's)."""
    if Path(python).resolve() == Path(sys.executable).resolve():
        return os.pathsep.join(site.getsitepackages())
    result = subprocess.run(
        [python, "-c", "import site, os; print(os.pathsep.join(site.getsitepackages()))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise ConfigError(f"--python-exec '{python}' could not be run: {result.stderr.strip()[-300:]}")
    return result.stdout.strip()


def submit_job(
    settings: Settings,
    cluster_url: str,
    job_args: Sequence[str],
    *,
    restore: Path | None,
    python_exec: str | None,
    log_path: Path,
    timeout_s: float = 300.0,
) -> str:
    """Submit the job detached; return its job id. A refused submission raises `InfraError` with Flink's reason."""
    staging = stage_python_files(settings.home.resolve() / "pipeline" / "pyfiles")
    python = python_exec or sys.executable
    command = [
        "bash",
        str(flink_home() / "bin" / "flink"),
        "run",
        "--detached",
        "-m",
        jobmanager_address(cluster_url),
        f"-Dpython.pythonpath={_site_packages(python)}",
        "--python",
        str(staging / "flink_pipeline" / "job.py"),
        "-pyfs",
        str(staging),
        "-pyexec",
        python,
        "-pyclientexec",
        sys.executable,
        "--jarfile",
        str(flink_connector_jar(settings)),
    ]
    if restore is not None:
        command += ["-s", str(restore)]
    command += ["--", *job_args]
    env = {**os.environ, "FLINK_CONF_DIR": str(client_conf_dir(settings))}
    env.pop("FLINK_LIB_DIR", None)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("submitting to cluster=%s restore=%s", cluster_url, restore)
    with log_path.open("ab") as log:
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, check=False
        )
        log.write(result.stdout)
    output = result.stdout.decode("utf-8", "replace")
    job_id = next(
        (line.rsplit(" ", 1)[-1] for line in output.splitlines() if "has been submitted with JobID" in line), None
    )
    if result.returncode != 0 or job_id is None:
        reason = _reason(output)
        if restore is not None:
            raise InfraError(
                f"cannot restore '{restore}': {reason}. Resume from another snapshot with --from PATH, or start "
                "empty with --fresh --yes"
            )
        raise InfraError(f"the cluster at {cluster_url} refused the job: {reason} (log: {log_path})")
    return job_id.strip()


def _reason(output: str) -> str:
    """The innermost `Caused by:` of the client's output, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    causes = [line.split("Caused by:", 1)[1].strip() for line in lines if line.startswith("Caused by:")]
    return (causes[-1] if causes else (lines[-1] if lines else "no output"))[:400]


def wait_running(cluster_url: str, job_id: str, *, timeout_s: float = 180.0) -> bool:
    """Whether the job and all its tasks run within `timeout_s`; raises `InfraError` when it fails instead."""
    from flink_pipeline.rest import FlinkRest

    rest = FlinkRest(cluster_url, timeout_s=3.0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = next((job.get("state") for job in rest.jobs() if job.get("jid") == job_id), None)
            if state == "RUNNING" and rest.tasks_running(job_id):
                return True
        except InfraError:
            state = None
        if state in ("FAILED", "CANCELED", "FINISHED"):
            raise InfraError(f"the job {job_id} ended with state {state} on {cluster_url}; see the cluster's logs")
        time.sleep(0.5)
    return False
