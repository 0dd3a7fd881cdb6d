"""The jars of the local Kafka broker and of Flink's Kafka connector, fetched from Maven Central by Maven.

Why Maven and not a tarball: Maven Central is the one place the project may download Java code from, Maven verifies
every artifact's checksum (`-C`, strict), and its `~/.m2` cache lives outside git. On top of Maven's check we pin the
SHA-256 of the main jars here, so a tampered or unexpected artifact fails loudly.

Layout under `Settings.jars_dir`:
    kafka-<version>/*.jar + MANIFEST.sha256   the broker's classpath (kafka_2.13 and its runtime dependencies)
    flink/flink-sql-connector-kafka-<v>.jar   the Flink connector fat jar (no transitive dependencies)

A directory counts as installed only when its `MANIFEST.sha256` exists and every jar it lists still has that hash; the
copy is made in a temporary directory and renamed into place, so a half-finished download never looks complete. A
second `install_jars` therefore runs no Maven at all and downloads nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from experiment.core.errors import InfraError
from experiment.model.digest import sha256_file
from experiment.runtime.config import Settings

__all__ = [
    "FLINK_CONNECTOR",
    "KAFKA_VERSION",
    "InstallReport",
    "flink_connector_jar",
    "install_jars",
    "jars_installed",
    "kafka_classpath",
    "kafka_jars_dir",
]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.2"
FLINK_CONNECTOR = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_POM = Path(__file__).with_name("pom.xml")
_MANIFEST = "MANIFEST.sha256"

# SHA-256 of the jars that matter most, recorded when the versions were pinned. Maven already checks SHA-1 against
# Central; these catch a changed pin or a poisoned local cache.
PINNED_SHA256: dict[str, str] = {
    f"kafka_2.13-{KAFKA_VERSION}.jar": "965af2d9c19be0c169110eb18468a0bee24e24d14071a57c7f8a57bc4d3f990e",
    f"kafka-clients-{KAFKA_VERSION}.jar": "afe861c05067f4018a3148d73c1ed1e5fc90808757c15b043527d7e535a5d431",
    f"kafka-server-{KAFKA_VERSION}.jar": "2b849f1c9d3d9a08a5ea4c2f0479c552592cd770d72263d8d1610701a9b3e8d4",
    f"kafka-storage-{KAFKA_VERSION}.jar": "902a08f775a9957e1546ecec8e22fbda73b84be9dfbdf04cce7a023dd60bf8b9",
    "log4j-core-2.25.3.jar": "362b7fcb65b73aa46cc4bc53abf4eb216f444a83b5d1a037cb6fdfff0ae9f0f9",
    "log4j-slf4j2-impl-2.25.3.jar": "bedc560168f4005d09452e6b6959b252f9efa2eb8cbd17c6660c36eecec7238b",
    "slf4j-api-2.0.17.jar": "7b751d952061954d5abfed7181c1f645d336091b679891591d63329c622eb832",
    "flink-sql-connector-kafka-5.0.0-2.2.jar": "5605c691d11a501382c383fecba37a7a552467da5ab7ba904ef5d6f3d62c5616",
}


@dataclass(frozen=True)
class InstallReport:
    """What `install_jars` found or did."""

    kafka_dir: Path
    flink_connector: Path
    downloaded: bool


def kafka_jars_dir(settings: Settings) -> Path:
    """The directory holding the broker's classpath for the pinned Kafka version."""
    return settings.jars_dir / f"kafka-{KAFKA_VERSION}"


def _flink_dir(settings: Settings) -> Path:
    return settings.jars_dir / "flink"


def flink_connector_jar(settings: Settings) -> Path:
    """Path of the Flink Kafka connector fat jar; raises `InfraError` naming the fix when it is not installed."""
    directory = _flink_dir(settings)
    jar = directory / f"{FLINK_CONNECTOR.split(':')[1]}-{FLINK_CONNECTOR.split(':')[2]}.jar"
    if not _verified(directory) or not jar.is_file():
        raise InfraError(
            f"The Flink Kafka connector jar is not installed in '{directory}'. Run `abflow kafka install`."
        )
    return jar.resolve()


def kafka_classpath(settings: Settings) -> str:
    """The broker's Java classpath (a wildcard over the installed jars directory)."""
    directory = kafka_jars_dir(settings)
    if not _verified(directory):
        raise InfraError(f"The Kafka broker jars are not installed in '{directory}'. Run `abflow kafka install`.")
    return str(directory.resolve() / "*")


def jars_installed(settings: Settings) -> bool:
    """Whether both jar sets are complete and unmodified (cheap enough to call before every `kafka up`)."""
    return _verified(kafka_jars_dir(settings)) and _verified(_flink_dir(settings))


def install_jars(settings: Settings) -> InstallReport:
    """Fetch the pinned jars into `settings.jars_dir` unless they are already there and intact.

    Serialised by a file lock so that parallel test sessions or commands do not download into each other.
    """
    settings.jars_dir.mkdir(parents=True, exist_ok=True)
    downloaded = False
    with open(settings.jars_dir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kafka_dir = kafka_jars_dir(settings)
        if not _verified(kafka_dir):
            logger.info("fetching kafka jars version=%s into=%s", KAFKA_VERSION, kafka_dir)
            _fetch(
                kafka_dir,
                ["-f", str(_POM), f"{_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime"],
                required=[name for name in PINNED_SHA256 if not name.startswith("flink-")],
            )
            downloaded = True
        flink_dir = _flink_dir(settings)
        if not _verified(flink_dir):
            logger.info("fetching flink connector artifact=%s into=%s", FLINK_CONNECTOR, flink_dir)
            _fetch(
                flink_dir,
                ["-f", str(_POM), f"{_DEPENDENCY_PLUGIN}:copy", f"-Dartifact={FLINK_CONNECTOR}", "-Dtransitive=false"],
                required=[name for name in PINNED_SHA256 if name.startswith("flink-")],
            )
            downloaded = True
    return InstallReport(kafka_dir=kafka_dir, flink_connector=flink_connector_jar(settings), downloaded=downloaded)


def _verified(directory: Path) -> bool:
    """True when the directory's manifest exists and every listed jar still has its recorded hash."""
    manifest = directory / _MANIFEST
    if not manifest.is_file():
        return False
    for line in manifest.read_text(encoding="utf-8").splitlines():
        expected, _, name = line.partition("  ")
        jar = directory / name
        if not jar.is_file() or sha256_file(jar) != expected:
            logger.warning("jar changed since install jar=%s", jar)
            return False
    return True


def _fetch(target: Path, maven_args: list[str], required: list[str]) -> None:
    """Run Maven into a temporary sibling directory, check the hashes, write the manifest, then rename into place."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError("Maven (`mvn`) is not on PATH; it is needed once to fetch the Kafka jars from Maven Central.")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        command = [mvn, "-B", "-q", "-C", *maven_args, f"-DoutputDirectory={staging}"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise InfraError(
                f"Maven could not fetch jars into '{target}' (exit {result.returncode}): " + " | ".join(tail)
            )
        lines = []
        for jar in sorted(staging.glob("*.jar")):
            digest = sha256_file(jar)
            pinned = PINNED_SHA256.get(jar.name)
            if pinned is not None and pinned != digest:
                raise InfraError(f"Checksum mismatch for '{jar.name}': expected sha256 {pinned}, got {digest}.")
            lines.append(f"{digest}  {jar.name}")
        missing = [name for name in required if not (staging / name).is_file()]
        if missing:
            raise InfraError(f"Maven finished but did not copy {', '.join(missing)} into '{staging}'.")
        (staging / _MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
