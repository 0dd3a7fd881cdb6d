"""Fixtures for the fault tests: the session's quick-trained PMML model, shared with the job integration tests."""

from __future__ import annotations

from tests.integration.conftest import JobModel, job_model

__all__ = ["JobModel", "job_model"]
