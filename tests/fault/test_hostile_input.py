"""Hostile input through the real decision job: every bad record is dead-lettered, every good one decided once.

At least 10,000 bad `sessions` and `outcomes` records (times `ABFLOW_FAULT_SCALE`) go through the real job on a
MiniCluster, interleaved with the good traffic of `tests.helpers.fault_traffic` (two running experiments, new and
returning customers, purchases) and with valid records that merely look odd (Unicode and NUL in ids, extreme but
legal numbers, purchases of customers no experiment has seen). Broken definitions go to `experiments` first.

The bad records are bad *by construction*, one kind each (`KINDS`): broken and non-UTF-8 JSON, wrong types, NaN
and infinities, numbers too large for the outputs, oversized payloads (up to 900 kB, under the broker's message
limit), deep nesting, missing and unknown keys, keys that differ from `customer_id`, tombstones. Their strings,
bytes and JSON values come from Hypothesis strategies (drawn once, `derandomize`); a seeded `random.Random`
builds the records from them. Half of them carry the id of a real customer of the good traffic, so a bad record
that leaked into a customer's state would show up in that customer's count.

Asserted: each bad record is in `dead-letter` exactly once at its source topic/partition/offset, with a non-empty
reason and its raw value (or a prefix of it, for the largest ones); no dead letter for anything else; the good
traffic decided and attributed exactly once (nothing lost, duplicated or changed); the odd valid sessions decided
exactly once; the job RUNNING and never restarted; and the collector stores all of it without skipping a record.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from experiment.core import events
from experiment.core.assignment import assign
from experiment.results.collector import collect
from experiment.results.store import ResultsStore
from tests.helpers.fault_traffic import count_results, job_health, plan_traffic, scaled
from tests.helpers.flink_job import definition, produce, publish, read_until, running_job, warm_up

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.flink, pytest.mark.fault]

SEED = 20_251_107
T = 1_700_000_000_000
MAX_BYTES = events.DEFAULT_MAX_BYTES
#: Oversized payloads stay below the broker's and the producer's 1 MiB message limit.
LARGEST_PAYLOAD = 900_000
#: What the job keeps of a raw value in a dead letter (larger ones are cut; the reason says so).
KEPT_RAW_BYTES = events.DEAD_LETTER_MAX_RAW_BYTES


# ----------------------------------------------------------------------------------------------------------------
# Atoms from Hypothesis
# ----------------------------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)


@dataclass(frozen=True)
class Atoms:
    """Hostile building blocks: Unicode text (no lone surrogates), raw bytes and arbitrary JSON values."""

    text: tuple[str, ...]
    binary: tuple[bytes, ...]
    json: tuple[Any, ...]


def draw_atoms(examples: int = 40, per_example: int = 12) -> Atoms:
    """Run one Hypothesis search whose only job is to draw values (no assertion, no shrinking)."""
    pool: dict[str, list[Any]] = {"text": [], "binary": [], "json": []}

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        n = per_example
        pool["text"] += data.draw(st.lists(st.text(min_size=1, max_size=24), min_size=n, max_size=n))
        pool["binary"] += data.draw(st.lists(st.binary(min_size=1, max_size=48), min_size=n, max_size=n))
        pool["json"] += data.draw(st.lists(_JSON, min_size=n, max_size=n))

    draw()
    return Atoms(tuple(pool["text"]), tuple(pool["binary"]), tuple(pool["json"]))


# ----------------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One message to send: logical topic, key, value and what it is (a bad kind, or `valid`/`orphan`)."""

    topic: str
    key: bytes | None
    value: bytes | None
    kind: str


def _dumps(obj: Any, rng: random.Random) -> bytes:
    """JSON as any producer might write it: NaN/Infinity literals allowed, ASCII-escaped or raw UTF-8."""
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode("utf-8")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Hostile:
    """Builds the bad records, bad by construction: one method per kind (`KINDS`), `kind(topic, j)` -> record j."""

    def __init__(self, rng: random.Random, atoms: Atoms, feature_names: tuple[str, ...], customers: list[str]):
        self.rng = rng
        self.atoms = atoms
        self.names = feature_names
        self.customers = customers
        self.not_str = [v for v in atoms.json if not (isinstance(v, str) and v)] + [None, 0, [], {}]
        self.not_int = [v for v in atoms.json if not (_is_number(v) and isinstance(v, int))] + [1.5, "1", True, None]
        self.not_number = [v for v in atoms.json if not _is_number(v)] + [True, False, None, "1", [1]]
        self.not_object = [v for v in atoms.json if not isinstance(v, dict)] + [None, [], "x", 0]

    # -- bases ------------------------------------------------------------------------------------------------

    def _customer(self, j: int) -> str:
        """Half the bad records name a real customer of the good traffic (their state must not change)."""
        return self.rng.choice(self.customers) if j % 2 else f"hostile-{j}"

    def _features(self) -> dict[str, Any]:
        return {name: float(self.rng.randint(0, 3)) for name in self.names}

    def session(self, j: int) -> dict[str, Any]:
        return {"event_id": f"bad-s{j}", "customer_id": self._customer(j), "ts": T + j, "features": self._features()}

    def outcome(self, j: int) -> dict[str, Any]:
        return {
            "event_id": f"bad-o{j}",
            "customer_id": self._customer(j),
            "ts": T + j,
            "type": "purchase",
            "category": "cat61",
            "revenue": 10.0,
        }

    def _record(self, topic: str, obj: dict[str, Any] | bytes, kind: str, key: bytes | None = None) -> Record:
        value = obj if isinstance(obj, bytes) else _dumps(obj, self.rng)
        if key is None and isinstance(obj, dict):
            key = str(obj.get("customer_id", f"hostile-key-{kind}")).encode("utf-8", "surrogatepass")
        return Record(topic, key, value, kind)

    def _base(self, topic: str, j: int) -> dict[str, Any]:
        return self.session(j) if topic == "sessions" else self.outcome(j)

    # -- kinds for both topics --------------------------------------------------------------------------------

    def json_prefix(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        text = json.dumps(obj, separators=(",", ":")).encode()
        return self._record(topic, text[: self.rng.randrange(1, len(text))], "json_prefix", obj["customer_id"].encode())

    def garbage(self, topic: str, j: int) -> Record:
        raw = self.rng.choice(self.atoms.binary)
        return self._record(topic, raw, "garbage", self._customer(j).encode())

    def non_utf8(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        bad = self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf", b"\x80"])
        raw = json.dumps(obj).encode().replace(obj["event_id"].encode(), obj["event_id"].encode() + bad, 1)
        return self._record(topic, raw, "non_utf8", obj["customer_id"].encode())

    def not_an_object(self, topic: str, j: int) -> Record:
        return self._record(topic, _dumps(self.rng.choice(self.not_object), self.rng), "not_an_object", b"k")

    def wrong_type(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        name = self.rng.choice(sorted(obj))
        if name == "ts":
            obj[name] = self.rng.choice(self.not_int)
        elif name == "features":
            obj[name] = self.rng.choice(self.not_object)
        elif name == "revenue":
            obj[name] = self.rng.choice(self.not_number)
        else:
            obj[name] = self.rng.choice(self.not_str)
        return self._record(topic, obj, "wrong_type", self._customer(j).encode())

    def empty_string(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        obj[self.rng.choice(["event_id", "customer_id"])] = ""
        return self._record(topic, obj, "empty_string", self._customer(j).encode())

    def negative_ts(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        obj["ts"] = self.rng.choice([-1, -T, -(2**63)])
        return self._record(topic, obj, "negative_ts")

    def nan_inf(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        bad = self.rng.choice([math.nan, math.inf, -math.inf])
        if topic == "sessions":
            obj["features"][self.rng.choice(self.names)] = bad
            if self.rng.random() < 0.2:
                obj["ts"] = bad
        else:
            obj[self.rng.choice(["revenue", "revenue", "ts"])] = bad
        return self._record(topic, obj, "nan_inf")

    def huge_ts(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        beyond_64_bits = self.rng.randrange(2**64, 2**80)
        obj["ts"] = self.rng.choice(
            [2**63, 2**64 - 1, self.rng.randrange(2**63, 2**64), 10**30, 10**400, beyond_64_bits]
        )
        return self._record(topic, obj, "huge_ts")

    def missing_fields(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        names = sorted(obj)
        for name in self.rng.sample(names, self.rng.randint(1, len(names))):
            del obj[name]
        return self._record(topic, obj, "missing_fields", self._customer(j).encode())

    def extra_field(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        name = self.rng.choice(["experiment_id", "experiment_id", "variant", *self.atoms.text])
        if name in obj:
            name = f"{name}_extra"
        obj[name] = self.rng.choice(["no-such-experiment", *self.atoms.json])
        return self._record(topic, obj, "extra_field")

    def key_mismatch(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        own = obj["customer_id"].encode()
        choices: list[Callable[[], bytes | None]] = [
            lambda: None,
            lambda: b"",
            lambda: self.rng.choice(self.customers).encode() + b"-other",
            lambda: own + b" ",
            lambda: own.upper() + b"X",
            lambda: self.rng.choice(self.atoms.binary),
            lambda: own + b"\xff",
            lambda: b"\xed\xa0\x80" + own,
            lambda: self.rng.choice([b"k", b"\x01", "é".encode()]) * self.rng.randrange(10_000, 300_000),
        ]
        key = own
        while key == own:
            key = self.rng.choice(choices)()
        return Record(topic, key, _dumps(obj, self.rng), "key_mismatch")

    def oversized(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        size = int(math.exp(self.rng.uniform(math.log(MAX_BYTES + 1), math.log(LARGEST_PAYLOAD))))
        unit = self.rng.choice([b"x", b"\x01", "é".encode(), "\U0001f642".encode(), b"\\u0000"])
        filler = unit * (size // len(unit) + 1)
        text = json.dumps(obj).encode()
        marker = obj["event_id"].encode()
        raw = text.replace(marker, marker + filler, 1)
        return self._record(topic, raw, "oversized", obj["customer_id"].encode())

    def tombstone(self, topic: str, j: int) -> Record:
        return Record(topic, self._customer(j).encode(), None, "tombstone")

    def deep_nesting(self, topic: str, j: int) -> Record:
        obj = self._base(topic, j)
        depth = self.rng.randrange(100, 6_000)
        shape = self.rng.choice(["list", "dict", "top"])
        if shape == "list":
            nested = "[" * depth + "]" * depth
        elif shape == "dict":
            depth = min(depth, 2_500)
            nested = '{"a":' * depth + "1" + "}" * depth
        else:
            raw = ("[" * depth + "]" * depth).encode()
            return self._record(topic, raw, "deep_nesting", obj["customer_id"].encode())
        target = "features" if topic == "sessions" else "revenue"
        text = json.dumps({**obj, target: "@@"}).replace('"@@"', nested)
        return self._record(topic, text.encode(), "deep_nesting", obj["customer_id"].encode())

    # -- sessions only ----------------------------------------------------------------------------------------

    def bad_feature_value(self, topic: str, j: int) -> Record:
        obj = self.session(j)
        value = self.rng.choice(
            [*self.not_number[:50], -1, -0.5, -1e300, -(2**70), True, False, None, "3", [1.0], {"v": 1.0}]
        )
        obj["features"][self.rng.choice(self.names)] = value
        return self._record(topic, obj, "bad_feature_value")

    def missing_feature(self, topic: str, j: int) -> Record:
        obj = self.session(j)
        for name in self.rng.sample(self.names, self.rng.randint(1, len(self.names))):
            del obj["features"][name]
        return self._record(topic, obj, "missing_feature")

    def unknown_feature(self, topic: str, j: int) -> Record:
        obj = self.session(j)
        name = self.rng.choice(["cat99", "cat0", "Age", "experiment", *self.atoms.text])
        if name in obj["features"]:
            name = f"{name}_x"
        obj["features"][name] = 1.0
        return self._record(topic, obj, "unknown_feature")

    def huge_counts(self, topic: str, j: int) -> Record:
        """Purchase counts that no output or store can hold exactly (each value alone is finite and >= 0)."""
        obj = self.session(j)
        counts = [name for name in self.names if name.startswith("cat")]
        choice = self.rng.randrange(4)
        if choice == 0:
            obj["features"][self.rng.choice(counts)] = 1e16
        elif choice == 1:
            obj["features"][self.rng.choice(counts)] = 1e20
        elif choice == 2:
            for name in counts[:2]:
                obj["features"][name] = 1e308  # the sum overflows to infinity
        else:
            obj["features"][self.rng.choice(counts)] = 2**64 - 1
        return self._record(topic, obj, "huge_counts")

    def surrogate_id(self, topic: str, j: int) -> Record:
        obj = self.session(j)
        obj["customer_id"] = "\ud800" + obj["customer_id"] + self.rng.choice(["", "\udfff"])
        raw = json.dumps(obj).encode()  # ASCII-escaped: valid UTF-8 whose JSON names a lone surrogate
        return Record(topic, obj["customer_id"].encode("utf-8", "surrogatepass"), raw, "surrogate_id")

    def surrogate_event_id(self, topic: str, j: int) -> Record:
        """Valid UTF-8 whose JSON names a lone surrogate in the event id: no output could carry it."""
        obj = self._base(topic, j)
        obj["event_id"] = self.rng.choice(["\ud800", "x\udfff", "\udbff\udbff"]) + obj["event_id"]
        return self._record(topic, json.dumps(obj).encode(), "surrogate_event_id", obj["customer_id"].encode())

    # -- outcomes only ----------------------------------------------------------------------------------------

    def bad_outcome_type(self, topic: str, j: int) -> Record:
        obj = self.outcome(j)
        obj["type"] = self.rng.choice(["refund", "Purchase", "purchase ", *self.atoms.text])
        if obj["type"] == "purchase":
            obj["type"] = "refund"
        return self._record(topic, obj, "bad_outcome_type")

    def bad_category(self, topic: str, j: int) -> Record:
        obj = self.outcome(j)
        category = self.rng.choice(["garden", "cat0", "cat-1", "CAT1", "cat01", "cat", " cat1", *self.atoms.text])
        obj["category"] = category if not re.fullmatch(r"cat[1-9][0-9]*", category) else "cat0"
        return self._record(topic, obj, "bad_category")

    def negative_revenue(self, topic: str, j: int) -> Record:
        obj = self.outcome(j)
        obj["revenue"] = self.rng.choice([-0.01, -1, -1e300, -(2**70)])
        return self._record(topic, obj, "negative_revenue")

    def huge_revenue(self, topic: str, j: int) -> Record:
        """A revenue whose cents no double, output or store holds exactly."""
        obj = self.outcome(j)
        obj["revenue"] = self.rng.choice([1e15, 1e300, 2**63, 10**30, 10**400])
        return self._record(topic, obj, "huge_revenue")


#: Every bad kind: (method, topics it applies to, relative weight). Oversized payloads and huge keys are rarer.
KINDS: dict[str, tuple[tuple[str, ...], float]] = {
    "json_prefix": (("sessions", "outcomes"), 1.0),
    "garbage": (("sessions", "outcomes"), 1.0),
    "non_utf8": (("sessions", "outcomes"), 1.0),
    "not_an_object": (("sessions", "outcomes"), 1.0),
    "wrong_type": (("sessions", "outcomes"), 2.0),
    "empty_string": (("sessions", "outcomes"), 0.5),
    "negative_ts": (("sessions", "outcomes"), 0.5),
    "nan_inf": (("sessions", "outcomes"), 1.0),
    "huge_ts": (("sessions", "outcomes"), 1.0),
    "missing_fields": (("sessions", "outcomes"), 1.0),
    "extra_field": (("sessions", "outcomes"), 1.0),
    "key_mismatch": (("sessions", "outcomes"), 1.0),
    "oversized": (("sessions", "outcomes"), 0.08),
    "tombstone": (("sessions", "outcomes"), 0.3),
    "deep_nesting": (("sessions", "outcomes"), 0.5),
    "bad_feature_value": (("sessions",), 1.5),
    "missing_feature": (("sessions",), 1.0),
    "unknown_feature": (("sessions",), 1.0),
    "huge_counts": (("sessions",), 0.5),
    "surrogate_id": (("sessions",), 0.5),
    "surrogate_event_id": (("sessions", "outcomes"), 0.5),
    "bad_outcome_type": (("outcomes",), 0.5),
    "bad_category": (("outcomes",), 1.0),
    "negative_revenue": (("outcomes",), 0.5),
    "huge_revenue": (("outcomes",), 0.5),
}
#: The reason a kind's dead letters must give, where it does not depend on the drawn values.
REASONS: dict[str, str] = {
    "json_prefix": r"^invalid JSON: ",
    "non_utf8": r"^payload is not UTF-8: ",
    "not_an_object": r"^(a (session|outcome) must be a JSON object|invalid JSON: )",
    "empty_string": r"^field '(event_id|customer_id)' must not be empty$",
    "negative_ts": r"^field 'ts' must be >= 0 \(epoch ms\)",
    "huge_ts": r"^field 'ts' must be (<= 9223372036854775807|an integer)",
    "missing_fields": r"^(session|outcome) is missing field\(s\): ",
    "extra_field": r"^(session|outcome) has unexpected field\(s\): ",
    "key_mismatch": r"^customer_id '.*' does not match the message key",
    "oversized": r"^oversized payload: \d+ bytes > max_bytes=16384",
    "tombstone": r"^null payload \(tombstone\) on an event topic$",
    "missing_feature": r"^missing feature key\(s\): ",
    "unknown_feature": r"^unknown feature key\(s\): ",
    "huge_counts": r"^purchase counts .* must sum to at most 9007199254740992",
    "surrogate_id": r"^field 'customer_id' must be valid Unicode, got a lone surrogate$",
    "surrogate_event_id": r"^field 'event_id' must be valid Unicode, got a lone surrogate$",
    "bad_category": r"^unknown category key ",
    "negative_revenue": r"^field 'revenue' must be >= 0",
    "huge_revenue": r"^(field 'revenue' must be (at most|finite)|unexpected OverflowError)",
}


def hostile_records(
    n: int, rng: random.Random, atoms: Atoms, names: tuple[str, ...], customers: list[str]
) -> list[Record]:
    """`n` bad records: every (kind, topic) at least once, the rest drawn by weight."""
    maker = Hostile(rng, atoms, names, customers)
    pairs = [(kind, topic) for kind, (topics, _w) in KINDS.items() for topic in topics]
    weights = [KINDS[kind][1] for kind, _topic in pairs]
    chosen = pairs + rng.choices(pairs, weights, k=max(0, n - len(pairs)))
    return [getattr(maker, kind)(topic, j) for j, (kind, topic) in enumerate(chosen)]


def odd_valid_sessions(n: int, rng: random.Random, atoms: Atoms, names: tuple[str, ...]) -> list[Record]:
    """Valid sessions that look odd: Unicode/NUL ids, ints for floats, 0, subnormals, huge ages, extreme times."""
    records = []
    for j in range(n):
        customer = f"odd-{j}-{rng.choice(atoms.text)}"
        features: dict[str, Any] = {}
        for name in names:
            if name.startswith("cat"):
                features[name] = rng.choice([0, 0.0, 5e-324, 1, 7, 2.5, 123_456, 1e6])
            else:
                features[name] = rng.choice([0, 1, 0.0, 5e-324, 130.5, 1e300, 2**64 - 1])
        obj = {
            "event_id": f"odd-e{j}-{rng.choice(atoms.text)}",
            "customer_id": customer,
            "ts": rng.choice([0, 1, 2**63 - 1, rng.randrange(2**63)]),
            "features": features,
        }
        records.append(Record("sessions", customer.encode(), _dumps(obj, rng), "valid"))
    return records


def orphan_outcomes(n: int, rng: random.Random) -> list[Record]:
    """Valid purchases of customers no experiment ever exposed: held, never attributed, never dead-lettered."""
    records = []
    for j in range(n):
        customer = f"orphan-{j}"
        revenue = rng.choice([0, 0.0, 1e-9, 12.34, 2**53 / 100])
        category = rng.choice(["cat61", "cat1", "cat987654321"])
        raw = events.outcome_json(f"orphan-o{j}", customer, rng.choice([0, T, 2**63 - 1]), category, revenue)
        records.append(Record("outcomes", customer.encode(), raw.encode(), "orphan"))
    return records


def _in_traffic(d: Any, customer_id: str) -> bool:
    return assign(d.salt, customer_id, d.traffic, d.weights()) is not None


def interleave(good: list[Record], bad: list[Record], rng: random.Random) -> list[Record]:
    """A random merge that keeps the order within `good` and within `bad`."""
    merged, i, k = [], 0, 0
    while i < len(good) or k < len(bad):
        if k == len(bad) or (i < len(good) and rng.random() * (len(good) - i + len(bad) - k) < len(good) - i):
            merged.append(good[i])
            i += 1
        else:
            merged.append(bad[k])
            k += 1
    return merged


# ----------------------------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------------------------


def test_hostile_records_are_dead_lettered_and_good_ones_decided_exactly_once(
    job_model, abflow_settings, kafka_group_id, tmp_path
) -> None:
    kafka = abflow_settings.kafka
    rng = random.Random(SEED)
    names = events.default_feature_names(job_model.categories)
    pmml, version, features = str(job_model.pmml), job_model.version, job_model.features
    main = definition("hostile-main", pmml, version, features, traffic=1.0)
    three = definition(
        "hostile-three", pmml, version, features, traffic=0.6, variants=(("control", 0.4), ("t1", 0.3), ("t2", 0.3))
    )
    running = [main, three]
    plan = plan_traffic(running, customers=scaled(1_500, 50), rounds=2, feature_names=names, tag="good", seed=SEED)
    atoms = draw_atoms()
    bad = hostile_records(scaled(10_000, 200), rng, atoms, names, [s.customer_id for s in plan.rounds[0]])
    odd = odd_valid_sessions(scaled(300, 20), rng, atoms, names)
    orphans = orphan_outcomes(scaled(200, 20), rng)

    for d in running:
        publish(kafka, d)
    broken_definitions: list[tuple[bytes | None, bytes | None]] = [
        (b"broken", b"{not json"),
        (b"binary", b"\xff\xfe\x00"),
        (b"hostile-main", json.dumps({**json.loads(main.to_json()), "version": 99, "traffic": 7}).encode()),
        (b"ghost", None),
        (b"hostile-main", json.dumps({"id": "hostile-main"}).encode()),
    ]
    produce(kafka, "experiments", broken_definitions)
    publish(kafka, definition("hostile-draft", pmml, version, features).transition("pause", int(time.time() * 1000)))

    sessions = interleave(
        [Record("sessions", *s.message(), "good") for s in plan.sessions] + odd,
        [r for r in bad if r.topic == "sessions"],
        rng,
    )
    outcomes = interleave(
        [Record("outcomes", *m, "good") for m in plan.purchase_messages()] + orphans,
        [r for r in bad if r.topic == "outcomes"],
        rng,
    )
    started = time.monotonic()
    with running_job(
        kafka, kafka_group_id, categories=job_model.categories, reference_rows=str(job_model.data_dir)
    ) as client:
        probe = next(p for p in (f"probe-{i}" for i in range(1_000)) if all(_in_traffic(d, p) for d in running))
        probes = warm_up(kafka, probe, features, len(running))
        positions: dict[tuple[str, int, int], Record] = {}
        for topic, records in (("sessions", sessions), ("outcomes", outcomes)):
            sent = produce(kafka, topic, [(r.key, r.value) for r in records])
            positions.update({(kafka.topic(topic), p, o): r for r, (p, o) in zip(records, sent, strict=True)})
        produced_s = time.monotonic() - started

        count = count_results(kafka, plan, timeout_s=180, quiet_s=6)
        odd_ids = {json.loads(r.value)["event_id"] for r in odd if r.value is not None}
        expected_odd = {
            (json.loads(r.value)["event_id"], d.id)
            for r in odd
            if r.value is not None
            for d in running
            if assign(d.salt, json.loads(r.value)["customer_id"], d.traffic, d.weights()) is not None
        }

        def everything(out: dict[str, list[dict]]) -> bool:
            odd_seen = {(a["event_id"], a["experiment_id"]) for a in out["assignments"] if a["event_id"] in odd_ids}
            return len(out["dead-letter"]) >= len(bad) and odd_seen >= expected_odd

        out = read_until(kafka, ["assignments", "attributed-outcomes", "dead-letter"], everything, timeout_s=120)
        health = job_health(client)
    elapsed = time.monotonic() - started
    print(
        f"[hostile] {len(bad)} bad, {len(plan.sessions)} good sessions, {len(odd)} odd valid, {len(orphans)} orphans;"
        f" produced in {produced_s:.1f}s, all counted in {elapsed:.1f}s; {count.summary()}; {health.status}"
    )

    # The job never failed over, and is still running.
    assert health.status == "RUNNING" and health.restarts == 0 and health.failure is None, health

    # Every bad record is dead-lettered exactly once, at its own position, with a reason and its raw value.
    dead = Counter((r["source_topic"], r["partition"], r["offset"]) for r in out["dead-letter"])
    bad_positions = {pos: r for pos, r in positions.items() if r.kind not in ("good", "valid", "orphan")}
    assert len(bad_positions) == len(bad)
    missing = [(pos, bad_positions[pos].kind) for pos in bad_positions if pos not in dead]
    assert not missing, f"{len(missing)} bad records never dead-lettered, e.g. {missing[:10]}"
    assert all(n == 1 for n in dead.values()), [k for k, n in dead.items() if n > 1][:10]
    not_bad = [(pos, positions[pos].kind if pos in positions else None) for pos in dead if pos not in bad_positions]
    assert not not_bad, f"dead letters for records that are not bad: {not_bad[:10]}"
    wrong_reason = []
    for letter in out["dead-letter"]:
        record = bad_positions[(letter["source_topic"], letter["partition"], letter["offset"])]
        reason = letter["error"]
        if not (isinstance(reason, str) and reason.strip()):
            wrong_reason.append((record.kind, reason))
            continue
        pattern = REASONS.get(record.kind)
        if pattern is not None and not re.search(pattern, reason):
            wrong_reason.append((record.kind, reason[:200]))
        if record.value is None:
            assert letter["raw"] is None
            continue
        raw = letter["raw"].encode() if letter["raw_encoding"] == "utf-8" else base64.b64decode(letter["raw"])
        if len(record.value) <= KEPT_RAW_BYTES:
            assert raw == record.value, (record.kind, raw[:80], record.value[:80])
        else:
            assert record.value.startswith(raw) and len(raw) >= KEPT_RAW_BYTES - 4, (record.kind, len(raw))
            assert f"of {len(record.value)} bytes" in reason, reason[-200:]
    assert not wrong_reason, f"{len(wrong_reason)} dead letters with an unexpected reason, e.g. {wrong_reason[:10]}"

    # The good traffic: nothing lost, duplicated, unexpected or changed (per session/purchase and experiment).
    count.assert_exact()
    assert count.complete

    # The odd valid sessions: decided exactly once per experiment whose traffic holds them, with the pure variant.
    odd_got = Counter((a["event_id"], a["experiment_id"]) for a in out["assignments"] if a["event_id"] in odd_ids)
    assert set(odd_got) == expected_odd and set(odd_got.values()) <= {1}
    by_id = {d.id: d for d in running}
    for a in out["assignments"]:
        d = by_id[a["experiment_id"]]
        assert a["variant"] == assign(d.salt, a["customer_id"], d.traffic, d.weights())
        if a["event_id"] in odd_ids:
            assert a["first_exposure"] is True and a["key"] == a["customer_id"]

    # Nothing else was decided or attributed: no bad record, no orphan purchase.
    probe_ids = {p["event_id"] for p in probes}
    others = [
        a["event_id"]
        for a in out["assignments"]
        if not (a["customer_id"].startswith(plan.customer_prefix) or a["event_id"] in odd_ids)
        and a["customer_id"] != probe
    ]
    assert not others, others[:10]
    assert probe_ids
    assert all(o["customer_id"].startswith(plan.customer_prefix) for o in out["attributed-outcomes"])

    # Downstream: the collector stores every output record and skips every broken definition, with its reason: the
    # store refuses what the definition schema refuses, as the job does (the version-99 one has traffic 7).
    store_path = tmp_path / "hostile.duckdb"
    stats = collect(abflow_settings, str(store_path), timeout_s=120)
    assert stats.skipped == len(broken_definitions), stats.skipped_reasons
    assert all(reason.startswith("experiments: ") for reason in stats.skipped_reasons), stats.skipped_reasons
    with ResultsStore(store_path, read_only=True) as store:
        stored = store.con.execute(
            "SELECT (SELECT count(*) FROM assignments), (SELECT count(*) FROM outcomes), "
            "(SELECT count(*) FROM dead_letters)"
        ).fetchone()
    assignments = {(a["experiment_id"], a["event_id"]) for a in out["assignments"]}
    attributed = {(o["experiment_id"], o["outcome_event_id"]) for o in out["attributed-outcomes"]}
    assert stored == (len(assignments), len(attributed), len(bad))
