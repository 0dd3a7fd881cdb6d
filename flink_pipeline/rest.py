"""A small client of Flink's REST API: job health, checkpoints, savepoints, stop-with-savepoint.

The local MiniCluster and a standalone cluster serve the same API, so `abflow pipeline status|stop|savepoint`
talk to a running job the same way wherever it runs. Standard library only (no PyFlink, no JVM): the CLI stays fast.
Endpoints: https://nightlies.apache.org/flink/flink-docs-stable/docs/ops/rest_api/
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from experiment.core.errors import InfraError

__all__ = ["CheckpointInfo", "FlinkRest", "JobHealth"]


@dataclass(frozen=True)
class CheckpointInfo:
    """The latest completed checkpoint or savepoint as Flink reports it."""

    path: str
    completed_ms: int
    size_bytes: int


@dataclass(frozen=True)
class JobHealth:
    """What `pipeline status` shows about the running job."""

    job_id: str
    name: str
    state: str
    restarts: int
    checkpoints_completed: int
    checkpoints_failed: int
    last_checkpoint: CheckpointInfo | None
    last_savepoint: CheckpointInfo | None
    restored_from: str | None
    records_in_per_s: float
    records_out_per_s: float


class FlinkRest:
    """Calls on one Flink REST endpoint (`http://127.0.0.1:8081`)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:500]
            raise InfraError(f"Flink REST {method} {path} failed: HTTP {error.code} {detail}") from error
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise InfraError(f"Flink REST API at {self.url} is unreachable: {error}") from error

    def reachable(self) -> bool:
        """Whether the REST API answers at all."""
        try:
            self._call("GET", "/config")
        except InfraError:
            return False
        return True

    def overview(self) -> dict[str, Any]:
        """The cluster's `/overview`: registered TaskManagers, total and available slots, jobs by state."""
        return dict(self._call("GET", "/overview") or {})

    def taskmanagers(self) -> list[dict[str, Any]]:
        """The registered TaskManagers as `/taskmanagers` lists them (`id` is the resource id, `slotsNumber`)."""
        return list(self._call("GET", "/taskmanagers").get("taskmanagers", []))

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the cluster knows, as `/jobs/overview` lists them (`jid`, `name`, `state`, `start-time`)."""
        return list(self._call("GET", "/jobs/overview").get("jobs", []))

    def active_job(self, name: str | None = None) -> dict[str, Any] | None:
        """The job that is not in a terminal state (optionally: with this name), newest first."""
        terminal = {"FINISHED", "FAILED", "CANCELED", "SUSPENDED"}
        candidates = [job for job in self.jobs() if job.get("state") not in terminal]
        if name is not None:
            candidates = [job for job in candidates if job.get("name") == name]
        candidates.sort(key=lambda job: int(job.get("start-time", 0)), reverse=True)
        return candidates[0] if candidates else None

    def tasks_running(self, job_id: str) -> bool:
        """Whether every task of the job runs.

        A job is RUNNING before its tasks have restored their state, and a checkpoint or savepoint triggered before
        that fails with "task … is not being executed".
        """
        vertices = self._call("GET", f"/jobs/{job_id}").get("vertices", [])
        return bool(vertices) and all(vertex.get("status") == "RUNNING" for vertex in vertices)

    def job_taskmanagers(self, job_id: str) -> set[str]:
        """The resource ids of the TaskManagers that run at least one task of the job (a test kills one of them)."""
        found: set[str] = set()
        for vertex in self._call("GET", f"/jobs/{job_id}").get("vertices", []):
            reply = self._call("GET", f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
            found.update(
                str(tm.get("taskmanager-id")) for tm in reply.get("taskmanagers", []) if tm.get("status") == "RUNNING"
            )
        return found

    def health(self, job_id: str) -> JobHealth:
        """State, restarts, checkpoints and record rates of one job."""
        job = self._call("GET", f"/jobs/{job_id}")
        checkpoints = self._call("GET", f"/jobs/{job_id}/checkpoints")
        metrics = self._call("GET", f"/jobs/{job_id}/metrics?get=numRestarts")
        restarts = int(float(next((m["value"] for m in metrics if m.get("id") == "numRestarts"), 0)))
        counts = checkpoints.get("counts", {})
        latest = checkpoints.get("latest", {}) or {}
        restored = latest.get("restored") or None
        records_in, records_out = self._rates(job_id, job)
        return JobHealth(
            job_id=job_id,
            name=str(job.get("name", "")),
            state=str(job.get("state", "UNKNOWN")),
            restarts=restarts,
            checkpoints_completed=int(counts.get("completed", 0)),
            checkpoints_failed=int(counts.get("failed", 0)),
            last_checkpoint=_checkpoint(latest.get("completed")),
            last_savepoint=_checkpoint(latest.get("savepoint")),
            restored_from=None if restored is None else str(restored.get("external_path", "")),
            records_in_per_s=records_in,
            records_out_per_s=records_out,
        )

    def _rates(self, job_id: str, job: dict[str, Any]) -> tuple[float, float]:
        """Records per second into the first vertex (sources) and out of the last one (the Kafka sink's input)."""
        vertices = job.get("vertices", [])
        if not vertices:
            return 0.0, 0.0

        def rate(vertex_id: str, metric: str) -> float:
            path = f"/jobs/{job_id}/vertices/{vertex_id}/subtasks/metrics?get={metric}&agg=sum"
            try:
                values = self._call("GET", path)
            except InfraError:
                return 0.0
            return float(values[0].get("sum", 0.0)) if values else 0.0

        sources = [v for v in vertices if "Source" in str(v.get("name", ""))] or vertices[:1]
        records_in = sum(rate(v["id"], "numRecordsOutPerSecond") for v in sources)
        records_out = rate(vertices[-1]["id"], "numRecordsInPerSecond")
        return records_in, records_out

    def abflow_counters(self, job_id: str) -> dict[str, float]:
        """The job's own counters (`abflow.<name>`, `abflow.experiment.<id>.<name>`), summed over subtasks."""
        totals: dict[str, float] = {}
        for vertex in self._call("GET", f"/jobs/{job_id}").get("vertices", []):
            base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
            names = [m["id"] for m in self._call("GET", base) if ".abflow." in str(m.get("id", ""))]
            for start in range(0, len(names), 40):  # keep the query string short
                chunk = names[start : start + 40]
                for value in self._call("GET", f"{base}?get={','.join(chunk)}&agg=sum"):
                    name = str(value["id"]).split(".abflow.", 1)[1]
                    totals[name] = totals.get(name, 0.0) + float(value.get("sum", 0.0))
        return totals

    def savepoint(self, job_id: str, directory: str, *, stop: bool, timeout_s: float = 120.0) -> str:
        """Take a savepoint (and stop the job when `stop`); wait for it and return its path.

        A job whose tasks are still starting (or restarting after a failure) cannot take one yet: wait for them.
        """
        deadline = time.monotonic() + timeout_s
        while not self.tasks_running(job_id):
            if time.monotonic() > deadline:
                raise InfraError(f"the tasks of job {job_id} are not all running; no savepoint can be taken now")
            time.sleep(0.5)
        if stop:
            reply = self._call("POST", f"/jobs/{job_id}/stop", {"targetDirectory": directory, "drain": False})
        else:
            reply = self._call(
                "POST", f"/jobs/{job_id}/savepoints", {"target-directory": directory, "cancel-job": False}
            )
        trigger = reply["request-id"]
        while time.monotonic() < deadline:
            result = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
            if result.get("status", {}).get("id") == "COMPLETED":
                operation = result.get("operation", {})
                if "location" in operation:
                    return str(operation["location"])
                cause = operation.get("failure-cause", {}).get("stack-trace", "unknown reason")
                raise InfraError(f"the savepoint of job {job_id} failed: {_first_line(cause)}")
            time.sleep(0.5)
        raise InfraError(f"the savepoint of job {job_id} did not complete within {timeout_s:.0f} s")

    def checkpoint_stats(self, job_id: str) -> dict[str, Any]:
        """Flink's checkpoint statistics of one job as it reports them (counts, latest, history)."""
        return dict(self._call("GET", f"/jobs/{job_id}/checkpoints"))

    def cancel(self, job_id: str) -> None:
        """Cancel without a savepoint (retained checkpoints stay)."""
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel")


def _checkpoint(entry: dict[str, Any] | None) -> CheckpointInfo | None:
    if not entry:
        return None
    return CheckpointInfo(
        path=str(entry.get("external_path", "")),
        completed_ms=int(entry.get("latest_ack_timestamp", 0)),
        size_bytes=int(entry.get("state_size", entry.get("checkpointed_size", 0))),
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return text[:300]
