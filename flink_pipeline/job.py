"""The abflow decision job: Kafka `sessions`/`outcomes` (+ broadcast `experiments`) in; decisions out, exactly once.

Topology (see docs/pipeline.md)::

    kafka sessions;outcomes (raw bytes + topic/partition/offset)     kafka experiments (from earliest)
        -> key by the message key = customer id (in Java)                       |
        -> DecideFunction (KeyedBroadcastProcessFunction) <--- broadcast --------+
           validate -> dead letter | assign -> score the arm by its own model -> decide | attribute outcomes
        -> Row(topic, key, value) -> one exactly-once Kafka sink
           (assignments, attributed-outcomes, dead-letter, experiment-health)

Why the Kafka *table* connector for the sources: PyFlink's `KafkaSource` only offers value-only deserializers, so a
DataStream source cannot hand Python the partition and offset that every dead letter must carry. The table
connector with `'format' = 'raw'` (BYTES) and the `topic`/`partition`/`offset` METADATA columns can; it is the
same `KafkaSource` underneath, converted to a DataStream with `to_data_stream`. The sink is the table connector
too, because it writes a per-record topic (writable `topic` metadata) and a key (`key.fields`) with the same
`KafkaSink` in EXACTLY_ONCE mode; the DataStream `KafkaSink` of PyFlink can do neither with a plain string schema.

Nothing here hard-codes a broker or a path: Kafka comes from `experiment.runtime.config.load_settings()` (or
flags), and the connector jar from `experiment.kafka.jars.flink_connector_jar` (or `--connector-jar`).

Run it locally with `abflow pipeline run`; submit it unchanged to a cluster with
`flink run --python flink_pipeline/job.py --pyFiles flink_pipeline,experiment --jarfile <connector jar>`.
"""

from __future__ import annotations

import argparse
import logging
import os
import site
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from experiment.core import events
from experiment.core.errors import ConfigError, InfraError
from experiment.kafka import topics as catalogue
from experiment.runtime.config import Settings, load_settings

__all__ = [
    "JobConfig",
    "build_job",
    "config_from_args",
    "create_environment",
    "job_topics",
    "log_dir",
    "main",
    "parse_args",
    "run_local_until_stopped",
    "submit",
    "use_log_dir",
]

logger = logging.getLogger(__name__)

ExecutionMode = Literal["thread", "process"]
StartupMode = Literal["group-offsets", "earliest-offset", "latest-offset"]
StateBackend = Literal["hashmap", "rocksdb"]
_DAY_MS = 24 * 3600 * 1000
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class JobConfig:
    """Every knob of the job, with the defaults we run with (docs/pipeline.md explains each choice)."""

    job_name: str = "abflow-decisions"
    parallelism: int = 1
    #: Exactly-once output becomes visible to read_committed consumers when a checkpoint completes, so this is
    #: also the end-to-end latency floor of decisions.
    checkpoint_interval_ms: int = 2_000
    execution_mode: ExecutionMode = "thread"
    #: Process mode only: records per bundle and max bundle age. Small bundles keep latency low; the Python
    #: worker's per-bundle overhead is paid every `bundle_size` records.
    bundle_size: int = 1_000
    bundle_time_ms: int = 100
    group_id: str = "abflow-decisions"
    transactional_id_prefix: str = "abflow-decisions"
    #: Kafka transaction timeout of the sink; must stay below the broker's `transaction.max.timeout.ms`
    #: (3,600,000 on the local broker; Kafka's default is 900,000).
    transaction_timeout_ms: int = 900_000
    #: Sink producer batching, measured with `bench.run --only job` (BENCHMARKS.md "job"): fewer, larger batches
    #: cost the JVM's Kafka threads less CPU on a 2-core machine. Lingering adds at most 20 ms before a
    #: transaction's records leave, invisible next to the checkpoint that commits them.
    sink_linger_ms: int = 20
    #: How long a network buffer between tasks (the keyed exchange) may wait to fill before it is sent. Flink's
    #: default of 100 ms would be most of a session's decision latency at moderate rates; full buffers leave at once.
    buffer_timeout_ms: int = 10
    sink_batch_bytes: int = 256 * 1024
    startup_mode: StartupMode = "group-offsets"
    categories: int = events.DEFAULT_CATEGORIES
    max_bytes: int = events.DEFAULT_MAX_BYTES
    #: How long an outcome without an exposure is held in case the exposure is only late (processing time).
    hold_ms: int = 10 * 60 * 1000
    #: TTL of the per-customer exposure state; longer than any attribution window we allow.
    state_ttl_ms: int = 30 * _DAY_MS
    #: Rows the scorer is verified on against pypmml: a data dir with X_test.csv, a CSV, or None (probe rows).
    reference_rows: str | None = None
    #: If the fast scorer cannot be proven equal to pypmml, score with pypmml (slow, logged at ERROR) instead of
    #: refusing that experiment's treatment.
    scorer_fallback: bool = True
    connector_jar: str | None = None
    #: Where checkpoints go (a URI such as file:///... or s3://...); local runs default to
    #: <home>/checkpoints/<job name>. They are retained when the job is cancelled or dies, so a restart resumes.
    checkpoint_dir: str | None = None
    #: Where savepoints go; local runs default to <home>/savepoints/<job name>.
    savepoint_dir: str | None = None
    #: Completed checkpoints Flink keeps per run (`pipeline run` also prunes older runs' down to this many).
    retained_checkpoints: int = 3
    #: The snapshot (checkpoint or savepoint folder) to restore keyed state and Kafka offsets from; None: empty.
    restore_from: str | None = None
    #: Fixed, so that a savepoint restores at any parallelism up to it (it sets the number of key groups).
    max_parallelism: int = 128
    #: Local runs: the port of the MiniCluster's REST API (`pipeline status|stop|savepoint` use it); None: any.
    rest_port: int | None = None
    #: Restart strategy inside a run: exponential delay between these bounds, so a broker outage heals itself.
    restart_initial_backoff_ms: int = 1_000
    restart_max_backoff_ms: int = 30_000
    #: Where keyed state lives: "hashmap" (JVM heap; the fastest while state fits in memory) or "rocksdb" (on
    #: local disk with incremental checkpoints, for state larger than the heap). docs/pipeline.md says which and why.
    state_backend: StateBackend = "hashmap"
    extra_config: dict[str, str] = field(default_factory=dict)

    def validate(self) -> JobConfig:
        """Reject impossible settings with a message that names them."""
        if self.parallelism < 1:
            raise ConfigError(f"parallelism must be >= 1, got {self.parallelism}")
        if self.parallelism > self.max_parallelism:
            raise ConfigError(
                f"parallelism must be <= the max parallelism {self.max_parallelism}, got {self.parallelism}"
            )
        if self.retained_checkpoints < 1:
            raise ConfigError(f"retained checkpoints must be >= 1, got {self.retained_checkpoints}")
        if self.checkpoint_interval_ms < 100:
            raise ConfigError(f"checkpoint interval must be >= 100 ms, got {self.checkpoint_interval_ms}")
        if self.state_backend not in ("hashmap", "rocksdb"):
            raise ConfigError(f"state backend must be 'hashmap' or 'rocksdb', got {self.state_backend!r}")
        if self.execution_mode not in ("thread", "process"):
            raise ConfigError(f"execution mode must be 'thread' or 'process', got {self.execution_mode!r}")
        if self.transaction_timeout_ms <= self.checkpoint_interval_ms:
            raise ConfigError(
                f"transaction timeout ({self.transaction_timeout_ms} ms) must exceed the checkpoint interval "
                f"({self.checkpoint_interval_ms} ms), or every transaction aborts before it can commit"
            )
        return self


def job_topics(settings: Settings) -> Any:
    """The physical topic names (prefix applied) the job reads and writes."""
    from flink_pipeline.functions import Topics

    kafka = settings.kafka
    return Topics(
        sessions=kafka.topic(catalogue.SESSIONS),
        outcomes=kafka.topic(catalogue.OUTCOMES),
        experiments=kafka.topic(catalogue.EXPERIMENTS),
        assignments=kafka.topic(catalogue.ASSIGNMENTS),
        attributed_outcomes=kafka.topic(catalogue.ATTRIBUTED_OUTCOMES),
        dead_letter=kafka.topic(catalogue.DEAD_LETTER),
        experiment_health=kafka.topic(catalogue.EXPERIMENT_HEALTH),
    )


def _connector_jar(settings: Settings, config: JobConfig) -> Path:
    if config.connector_jar:
        jar = Path(config.connector_jar).expanduser().resolve()
        if not jar.is_file():
            raise ConfigError(f"connector jar '{jar}' does not exist")
        return jar
    from experiment.kafka.jars import flink_connector_jar

    return flink_connector_jar(settings)


def create_environment(settings: Settings, config: JobConfig, *, local: bool = True) -> tuple[Any, Any]:
    """A configured `StreamExecutionEnvironment` and its `StreamTableEnvironment`.

    `local=True` (the MiniCluster) points Python workers at this interpreter and its site-packages, which thread
    mode needs: the embedded interpreter does not see a virtualenv by itself. On a cluster, ship the code with
    `--pyFiles` and the jar with `--jarfile` instead.
    """
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    config.validate()
    conf = Configuration()
    conf.set_string("python.execution-mode", config.execution_mode)
    conf.set_string("python.fn-execution.bundle.size", str(config.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(config.bundle_time_ms))
    conf.set_string("pipeline.name", config.job_name)
    if local:
        conf.set_string("python.executable", sys.executable)
        paths = [str(_PROJECT_ROOT), *site.getsitepackages()]
        conf.set_string("python.pythonpath", ":".join(paths))
        conf.set_string("pipeline.jars", _connector_jar(settings, config).as_uri())
    elif config.connector_jar:
        conf.set_string("pipeline.jars", _connector_jar(settings, config).as_uri())
    # Checkpoints go to a filesystem: the JobManager's memory storage caps state at 5 MB, which one busy
    # experiment's per-customer state outgrows within minutes (the job would then fail every checkpoint).
    checkpoint_dir, savepoint_dir = config.checkpoint_dir, config.savepoint_dir
    if local:
        from flink_pipeline.checkpoints import checkpoint_root, savepoint_root

        checkpoint_dir = checkpoint_dir or checkpoint_root(settings.home, config.job_name).resolve().as_uri()
        savepoint_dir = savepoint_dir or savepoint_root(settings.home, config.job_name).resolve().as_uri()
        conf.set_string("rest.address", "127.0.0.1")
        conf.set_string("rest.bind-address", "127.0.0.1")
        if config.rest_port is not None:
            conf.set_string("rest.bind-port", str(config.rest_port))
    if checkpoint_dir:
        conf.set_string("execution.checkpointing.storage", "filesystem")
        conf.set_string("execution.checkpointing.dir", str(checkpoint_dir))
    if savepoint_dir:
        conf.set_string("execution.checkpointing.savepoint-dir", str(savepoint_dir))
    # Durability: a run that dies or is cancelled leaves its checkpoints behind for the next run to resume from.
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    conf.set_string("execution.checkpointing.num-retained", str(config.retained_checkpoints))
    conf.set_string("pipeline.max-parallelism", str(config.max_parallelism))
    conf.set_string("state.backend.type", config.state_backend)
    if config.state_backend == "rocksdb":
        conf.set_string("execution.checkpointing.incremental", "true")
    # Stable operator ids for the SQL sources and sink too (the Python operator has its own uid), so a new
    # parallelism or a new build of the same topology maps a savepoint's state back onto the same operators.
    conf.set_string("table.exec.uid.generation", "ALWAYS")
    conf.set_string("restart-strategy.type", "exponential-delay")
    conf.set_string("restart-strategy.exponential-delay.initial-backoff", f"{config.restart_initial_backoff_ms} ms")
    conf.set_string("restart-strategy.exponential-delay.max-backoff", f"{config.restart_max_backoff_ms} ms")
    conf.set_string("restart-strategy.exponential-delay.backoff-multiplier", "2.0")
    conf.set_string("restart-strategy.exponential-delay.jitter-factor", "0.1")
    if config.restore_from:
        # Never skip state: a snapshot whose state has no operator to go to is an error, not a silent loss.
        conf.set_string("execution.state-recovery.path", str(config.restore_from))
        conf.set_string("execution.state-recovery.ignore-unclaimed-state", "false")
        conf.set_string("execution.state-recovery.claim-mode", "NO_CLAIM")
    for key, value in config.extra_config.items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(config.parallelism)
    env.set_max_parallelism(config.max_parallelism)
    env.set_buffer_timeout(config.buffer_timeout_ms)
    env.enable_checkpointing(config.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    t_env = StreamTableEnvironment.create(env)
    return env, t_env


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _kafka_options(settings: Settings, extra: dict[str, str]) -> str:
    options = {"connector": "kafka"}
    for key, value in settings.kafka.java_properties().items():
        options[f"properties.{key}"] = value
    options.update(extra)
    return ",\n  ".join(f"{_quote(k)} = {_quote(v)}" for k, v in options.items())


def _source_ddl(name: str, topic_list: Sequence[str], settings: Settings, group_id: str, startup: str) -> str:
    """A raw-bytes Kafka source whose rows carry their own topic, partition and offset (for dead letters)."""
    options = _kafka_options(
        settings,
        {
            "topic": ";".join(topic_list),
            "properties.group.id": group_id,
            "properties.isolation.level": "read_committed",
            "properties.auto.offset.reset": "earliest",
            "scan.startup.mode": startup,
            "key.format": "raw",
            "key.fields": "key",
            "value.format": "raw",
            "value.fields-include": "EXCEPT_KEY",
        },
    )
    return (
        f"CREATE TEMPORARY TABLE `{name}` (\n"
        "  `key` BYTES,\n"
        "  `raw` BYTES,\n"
        "  `src_topic` STRING METADATA FROM 'topic' VIRTUAL,\n"
        "  `src_partition` INT METADATA FROM 'partition' VIRTUAL,\n"
        "  `src_offset` BIGINT METADATA FROM 'offset' VIRTUAL\n"
        f") WITH (\n  {options}\n)"
    )


def _sink_ddl(name: str, topic_list: Sequence[str], settings: Settings, config: JobConfig) -> str:
    """One exactly-once sink for all outputs: the row's `topic` column picks the topic, `k` is the message key."""
    options = _kafka_options(
        settings,
        {
            "topic": ";".join(topic_list),
            "key.format": "raw",
            "key.fields": "k",
            "value.format": "raw",
            "value.fields-include": "EXCEPT_KEY",
            "sink.delivery-guarantee": "exactly-once",
            "sink.transactional-id-prefix": config.transactional_id_prefix,
            "properties.transaction.timeout.ms": str(config.transaction_timeout_ms),
            "properties.linger.ms": str(config.sink_linger_ms),
            "properties.batch.size": str(config.sink_batch_bytes),
        },
    )
    return (
        f"CREATE TEMPORARY TABLE `{name}` (\n"
        "  `topic` STRING METADATA FROM 'topic',\n"
        "  `k` STRING,\n"
        "  `v` STRING\n"
        f") WITH (\n  {options}\n)"
    )


def _keyed_in_java(t_env: Any, table: str) -> Any:
    """Key the raw event stream by customer id *in Java*, so no Python operator runs before the exchange.

    `DataStream.key_by` always inserts a Python operator that computes the key (and converts every row Java ->
    Python -> Java once more). Here the key is the Kafka message key, which every producer sets to the customer
    id ('' when absent; `DecideFunction` dead-letters any record whose `customer_id` differs from its key), and
    the stream is keyed with the same Java key selector PyFlink's `key_by` uses, on rows shaped as PyFlink's
    keyed operators expect them: `Row(key, value)`. Python therefore touches each record once, in `DecideFunction`.
    """
    from pyflink.common import Types
    from pyflink.datastream import DataStream, KeyedStream
    from pyflink.java_gateway import get_gateway

    from flink_pipeline.functions import RAW_TYPE

    keyed_rows = t_env.sql_query(
        "SELECT COALESCE(CAST(`key` AS STRING), '') AS `k`, "
        "ROW(`raw`, `src_topic`, `src_partition`, `src_offset`) AS `v` "
        f"FROM {table}"
    )
    stream = t_env.to_data_stream(keyed_rows)
    # The table bridge types its output as ExternalTypeInfo; PyFlink's Python operators expect a RowTypeInfo.
    # Both serialize the same `org.apache.flink.types.Row` objects, so declare the equivalent RowTypeInfo.
    key_type = Types.ROW([Types.STRING()])
    stream._j_data_stream.getTransformation().setOutputType(Types.ROW([Types.STRING(), RAW_TYPE]).get_java_type_info())
    j_keyed = stream._j_data_stream.keyBy(get_gateway().jvm.KeyByKeySelector(), key_type.get_java_type_info())
    origin = DataStream(stream._j_data_stream)
    return KeyedStream(j_keyed, RAW_TYPE, origin)


def build_job(env: Any, t_env: Any, settings: Settings, config: JobConfig, *, function: Any = None) -> None:
    """Add the whole decision topology to `env` (sources, function, sink); `env.execute*` then runs it.

    `function` replaces `DecideFunction` (same inputs and output type); only the benchmark uses it, to measure
    the framework's own cost with a function that does nothing.
    """
    from flink_pipeline.functions import EXPERIMENTS_STATE, OUTPUT_TYPE, DecideFunction

    config.validate()
    topics = job_topics(settings)
    t_env.execute_sql(
        _source_ddl("abflow_events", [topics.sessions, topics.outcomes], settings, config.group_id, config.startup_mode)
    )
    # Definitions are read from the start every time: the compacted topic holds the latest version per id.
    t_env.execute_sql(
        _source_ddl(
            "abflow_experiments", [topics.experiments], settings, f"{config.group_id}-experiments", "earliest-offset"
        )
    )
    output_topics = [topics.assignments, topics.attributed_outcomes, topics.dead_letter, topics.experiment_health]
    t_env.execute_sql(_sink_ddl("abflow_out", output_topics, settings, config))

    keyed_events = _keyed_in_java(t_env, "abflow_events")
    raw_experiments = t_env.to_data_stream(
        t_env.sql_query("SELECT `raw`, `src_topic`, `src_partition`, `src_offset` FROM abflow_experiments")
    )
    decide = function or DecideFunction(
        topics,
        feature_names=events.default_feature_names(config.categories),
        max_bytes=config.max_bytes,
        hold_ms=config.hold_ms,
        state_ttl_ms=config.state_ttl_ms,
        reference_rows=config.reference_rows,
        scorer_fallback=config.scorer_fallback,
        kafka=settings.kafka,
    )
    outputs = (
        keyed_events.connect(raw_experiments.broadcast(EXPERIMENTS_STATE))
        .process(decide, output_type=OUTPUT_TYPE)
        .name("decide")
        .uid("decide")
    )
    statements = t_env.create_statement_set()
    statements.add_insert("abflow_out", t_env.from_data_stream(outputs))
    statements.attach_as_datastream()


def submit(
    settings: Settings, config: JobConfig, *, local: bool = True, wait: bool = False, function: Any = None
) -> Any:
    """Build and start the job; return its `JobClient` (or block until it ends when `wait`)."""
    env, t_env = create_environment(settings, config, local=local)
    build_job(env, t_env, settings, config, function=function)
    logger.info(
        "submitting job=%s parallelism=%d mode=%s checkpoint_ms=%d bootstrap=%s prefix=%r",
        config.job_name,
        config.parallelism,
        config.execution_mode,
        config.checkpoint_interval_ms,
        settings.kafka.bootstrap_servers,
        settings.kafka.topic_prefix,
    )
    if wait:
        env.execute(config.job_name)
        return None
    return env.execute_async(config.job_name)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The job's command line (shared by `flink run --python` and `abflow pipeline run`)."""
    defaults = JobConfig()
    parser = argparse.ArgumentParser(description="abflow decision job (for `flink run --python`)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: ABFLOW_KAFKA_BOOTSTRAP / config)")
    parser.add_argument("--topic-prefix", help="prefix of every topic name")
    parser.add_argument("--parallelism", type=int, default=defaults.parallelism)
    parser.add_argument("--checkpoint-interval-ms", type=int, default=defaults.checkpoint_interval_ms)
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint URI (file:///..., s3://...)")
    parser.add_argument("--savepoint-dir", default=None, help="savepoint URI (file:///..., s3://...)")
    parser.add_argument("--restore-from", default=None, help="checkpoint or savepoint to resume from")
    parser.add_argument("--max-parallelism", type=int, default=defaults.max_parallelism)
    parser.add_argument("--state-backend", choices=["hashmap", "rocksdb"], default=defaults.state_backend)
    parser.add_argument("--rest-port", type=int, default=None, help="local runs: port of the REST API")
    parser.add_argument("--execution-mode", choices=["thread", "process"], default=defaults.execution_mode)
    parser.add_argument("--bundle-size", type=int, default=defaults.bundle_size)
    parser.add_argument("--bundle-time-ms", type=int, default=defaults.bundle_time_ms)
    parser.add_argument("--group-id", default=defaults.group_id)
    parser.add_argument("--transactional-id-prefix", default=defaults.transactional_id_prefix)
    parser.add_argument("--categories", type=int, default=defaults.categories)
    parser.add_argument("--reference-rows", default=None, help="data dir with X_test.csv to verify the scorer on")
    parser.add_argument(
        "--startup-mode", choices=["group-offsets", "earliest-offset", "latest-offset"], default=defaults.startup_mode
    )
    parser.add_argument("--connector-jar", default=None, help="local runs: the Kafka connector jar")
    parser.add_argument("--local", action="store_true", help="run on a local MiniCluster (default: the cluster)")
    return parser.parse_args(list(argv))


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The `JobConfig` that the command-line flags describe."""
    return replace(
        JobConfig(),
        parallelism=args.parallelism,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        checkpoint_dir=args.checkpoint_dir,
        savepoint_dir=args.savepoint_dir,
        restore_from=args.restore_from,
        max_parallelism=args.max_parallelism,
        state_backend=args.state_backend,
        rest_port=args.rest_port,
        execution_mode=args.execution_mode,
        bundle_size=args.bundle_size,
        bundle_time_ms=args.bundle_time_ms,
        group_id=args.group_id,
        transactional_id_prefix=args.transactional_id_prefix,
        categories=args.categories,
        reference_rows=args.reference_rows,
        startup_mode=args.startup_mode,
        connector_jar=args.connector_jar,
    ).validate()


def run_local_until_stopped(settings: Settings, config: JobConfig) -> None:
    """Run on the MiniCluster until the job ends or SIGTERM/SIGINT arrives; then cancel it cleanly.

    Cancelling (rather than dying with the JVM) lets the sink abort its open Kafka transaction at once, so the next
    run's read_committed consumers are not held back until the transaction times out. Its checkpoints are retained
    either way; `pipeline stop` ends the job with a savepoint through the REST API instead, and this loop then sees
    it FINISHED. A job that fails while restoring its snapshot is an error naming that snapshot.
    """
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        client = submit(settings, config, local=True)
    except Exception as exc:  # Py4J wraps the JobManager's refusal; say which snapshot it refused
        if not config.restore_from:
            raise
        raise InfraError(
            f"cannot restore '{config.restore_from}': {_root_cause(exc)}. Resume from another snapshot with "
            "--from PATH, or start empty with --fresh --yes"
        ) from exc
    logger.info("job running job_id=%s restored_from=%s", client.get_job_id(), config.restore_from or "nothing")
    while not stop.wait(1.0):
        status = str(client.get_job_status().result()).rsplit(".", 1)[-1]
        if status == "FINISHED":
            logger.info("job finished job_id=%s (stopped with a savepoint)", client.get_job_id())
            return
        if status in ("FAILED", "CANCELED"):
            logger.error("job ended status=%s job_id=%s", status, client.get_job_id())
            if config.restore_from:
                raise InfraError(
                    f"the job {status.lower()} after restoring '{config.restore_from}'; the snapshot may be corrupt "
                    "or incompatible (see the log). Resume from another one with --from, or --fresh --yes"
                )
            raise InfraError(f"the job ended with status {status}; see the log")
    logger.info("stopping: cancelling job_id=%s", client.get_job_id())
    client.cancel().result()


def _root_cause(exc: BaseException) -> str:
    """The innermost 'Caused by:' of a Java exception's text (the useful line), else the exception itself."""
    causes = [line.split("Caused by:", 1)[1].strip() for line in str(exc).splitlines() if "Caused by:" in line]
    return (causes[-1] if causes else str(exc).strip().splitlines()[0])[:400]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `flink run --python flink_pipeline/job.py [options]`; `--local` runs on a MiniCluster."""
    from experiment.runtime.redaction import install_log_redaction

    install_log_redaction()  # before the first log line: settings may carry a SASL password
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Starting PyFlink's gateway resets the root logger to WARNING; keep our own loggers at INFO regardless.
    for name in ("flink_pipeline", "experiment", "__main__"):
        logging.getLogger(name).setLevel(logging.INFO)
    settings = load_settings({"kafka.bootstrap_servers": args.bootstrap, "kafka.topic_prefix": args.topic_prefix})
    config = config_from_args(args)
    if args.local:
        use_log_dir(settings)
        try:
            run_local_until_stopped(settings, config)
        except InfraError as error:
            logger.error("%s", error)
            raise SystemExit(1) from error
    else:
        submit(settings, config, local=False, wait=True)


def log_dir(settings: Settings) -> Path:
    """Where a local run's Flink and operator logs go: under the abflow state folder, next to job.log."""
    return settings.home / "pipeline" / "logs"


def use_log_dir(settings: Settings) -> None:
    """Point the MiniCluster's log files (Flink's and the operators' Python logging) at `log_dir`.

    PyFlink's gateway otherwise writes them into its own package folder inside the virtualenv, where nobody looks.
    Must run before the gateway JVM starts.
    """
    directory = log_dir(settings).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(directory))


if __name__ == "__main__":
    main()
