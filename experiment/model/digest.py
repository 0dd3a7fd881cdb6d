"""The one streamed sha256 of a file: a PMML's `model_version`, a jar's pinned checksum.

Why one helper: whatever names a file by its bytes (model.json's `model_version`, an experiment's model, the jar
manifest) must hash it the same way, and reading in blocks keeps memory flat for a large PMML or a fat jar. It needs
only the standard library, so the launcher, the job and the Kafka tooling can all import it cheaply.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file"]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, streamed (the `model_version` of a PMML file)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
