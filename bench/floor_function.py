"""The framework floor of the decision job: a function with `DecideFunction`'s inputs and output, doing nothing.

`bench.bench_job` runs the real topology with this function in place of `DecideFunction`, so the gap between the
two rows is exactly our per-record Python (parsing, assignment, scoring, state, JSON), and the floor itself is
Flink's cost: the Kafka table source, Java keying, the Java -> Python hand-over, the output conversion and the
exactly-once sink. It lives in its own module so that the job's Python workers can import it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pyflink.common import Row
from pyflink.datastream.functions import KeyedBroadcastProcessFunction

__all__ = ["FloorFunction"]


class FloorFunction(KeyedBroadcastProcessFunction):
    """Emits one minimal assignment-shaped record per input record; ignores the experiments."""

    def __init__(self, assignments_topic: str) -> None:
        self._topic = assignments_topic

    def process_element(self, value: Row, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Any:
        """One output per input, keyed like the real one, with the `decided_ts` the benchmark reads."""
        record = {"decided_ts": int(time.time() * 1000), "variant": "control"}
        yield Row(self._topic, ctx.get_current_key(), orjson.dumps(record).decode())

    def process_broadcast_element(self, value: Row, ctx: KeyedBroadcastProcessFunction.Context) -> None:
        """Definitions are irrelevant here."""
