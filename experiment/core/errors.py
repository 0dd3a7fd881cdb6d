"""The one exception root of abflow.

Every expected failure (bad input, an illegal transition, an unreachable broker) is an `AbflowError`, so that an
entry point can print one line and exit with code 2 without swallowing real bugs.
"""

from __future__ import annotations

__all__ = [
    "AbflowError",
    "ConfigError",
    "DataValidationError",
    "ExperimentError",
    "InfraError",
    "ModelError",
    "ParityError",
]


class AbflowError(Exception):
    """Root of every error that abflow raises on purpose."""

    exit_code: int = 2


class ConfigError(AbflowError):
    """A setting is missing, malformed or contradicts another."""


class DataValidationError(AbflowError):
    """An input file does not follow the seed's data layout."""


class ModelError(AbflowError):
    """A model file is missing, tampered with or unusable."""


class ParityError(ModelError):
    """The exported PMML does not reproduce the native model's scores."""

    exit_code = 3


class ExperimentError(AbflowError):
    """An experiment definition or lifecycle change is invalid."""


class InfraError(AbflowError):
    """A local engine (Kafka broker, jars, Flink) could not be set up or reached."""
