"""Serving fixtures: an exported model directory, the Flask app and a real gunicorn process.

``build_standin_export`` writes a model directory exactly per the export contract in
``docs/architecture.md`` (``model.onnx``, ``model.json``, ``golden.json``). It stands in for the
real ``export`` stage so these tests never depend on ``models/export`` existing; swap the body
of :func:`exported_model` for the stage's core once it lands.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import REPO_ROOT

MODEL_NAME = "penguins-classifier"
NUMERIC = {
    "bill_length_mm": (25.0, 70.0),
    "bill_depth_mm": (10.0, 25.0),
    "flipper_length_mm": (160.0, 240.0),
    "body_mass_g": (2500.0, 6500.0),
}
CATEGORICAL = {"island": ["Biscoe", "Dream", "Torgersen"], "sex": ["female", "male"]}
NULLABLE = {"island": False, "sex": True, **dict.fromkeys(NUMERIC, True)}
FEATURES = ["island", *NUMERIC, "sex"]
TARGET = "species"


def build_standin_export(out_dir: Path, *, c: float = 1.0, name: str = MODEL_NAME) -> Path:
    """Train a small scikit-learn pipeline on Palmer Penguins and export it like ``export`` does.

    ``c`` is LogisticRegression's C, so two calls give two genuinely different model versions.
    """
    import onnxruntime as ort
    import pandas as pd
    from palmerpenguins import load_penguins
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    raw = load_penguins().dropna(subset=[TARGET]).reset_index(drop=True)
    frame = pd.DataFrame({name: raw[name].astype("float64") for name in NUMERIC})
    for column in CATEGORICAL:
        frame[column] = np.where(raw[column].isna(), "", raw[column].astype(str)).astype(object)
    frame = frame[FEATURES]
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(missing_values="", strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    classifier = LogisticRegression(C=c, max_iter=1000)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("num", numeric, list(NUMERIC)), ("cat", categorical, list(CATEGORICAL))]
                ),
            ),
            ("clf", classifier),
        ]
    ).fit(frame, raw[TARGET].astype(str))

    initial_types = [
        (col, StringTensorType([None, 1]) if col in CATEGORICAL else FloatTensorType([None, 1]))
        for col in FEATURES
    ]
    onx = convert_sklearn(
        model,
        initial_types=initial_types,
        target_opset=17,
        options={id(classifier): {"zipmap": False}},
        final_types=[
            ("label", StringTensorType([None])),
            ("probabilities", FloatTensorType([None, len(model.classes_)])),
        ],
    )
    _take_double_inputs(onx, list(NUMERIC))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(onx.SerializeToString())

    classes = [str(x) for x in model.classes_]
    inputs = []
    for col in FEATURES:
        if col in CATEGORICAL:
            inputs.append(
                {
                    "name": col,
                    "kind": "categorical",
                    "dtype": "string",
                    "nullable": NULLABLE[col],
                    "categories": CATEGORICAL[col],
                }
            )
        else:
            lo, hi = NUMERIC[col]
            inputs.append(
                {
                    "name": col,
                    "kind": "numeric",
                    "dtype": "float64",
                    "nullable": NULLABLE[col],
                    "min": lo,
                    "max": hi,
                }
            )
    descriptor = {
        "schema_version": 1,
        "name": name,
        "estimator": "logistic_regression",
        "family": "sklearn",
        "onnx": {
            "file": "model.onnx",
            "opset": 17,
            "inputs": FEATURES,
            "outputs": ["label", "probabilities"],
        },
        "saved_model": None,
        "inputs": inputs,
        "target": TARGET,
        "classes": classes,
        "metrics": {"accuracy": 0.99, "f1_macro": 0.99, "roc_auc_ovr": 0.99, "log_loss": 0.05},
        "parity": {"passed": True, "max_abs_diff": 1e-7, "tolerance": 1e-5},
        "lineage": {
            "run_id": "standin",
            "git_commit": "unknown",
            "data_sha256": "unknown",
            "params": {"train.estimator": "logistic_regression", "C": c},
        },
    }
    (out_dir / "model.json").write_text(json.dumps(descriptor, indent=2) + "\n")

    # Golden rows: one per species, rows with missing values, and an unseen category.
    picks = [raw.index[raw[TARGET] == s][0] for s in classes]
    picks += list(raw.index[raw["sex"].isna()][:2]) + list(
        raw.index[raw["bill_length_mm"].isna()][:1]
    )
    rows = []
    for i in picks:
        rows.append({col: _json_value(raw.at[i, col]) for col in FEATURES})
    unseen = dict(rows[0])
    unseen["island"] = "Atlantis"
    rows.append(unseen)
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {}
    for col in FEATURES:
        values = [r[col] for r in rows]
        if col in CATEGORICAL:
            feed[col] = np.array(["" if v is None else v for v in values], dtype=object).reshape(
                -1, 1
            )
        else:
            feed[col] = np.array(
                [np.nan if v is None else v for v in values], dtype=np.float64
            ).reshape(-1, 1)
    labels, probs = session.run(["label", "probabilities"], feed)
    golden = {
        "tolerance": 1e-5,
        "rows": [
            {"inputs": r, "label": str(lab), "probabilities": [float(p) for p in prob]}
            for r, lab, prob in zip(rows, labels, probs, strict=True)
        ],
    }
    (out_dir / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    return out_dir


def _json_value(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _take_double_inputs(onx, names: list[str]) -> None:
    """Make numeric graph inputs ``tensor(double)`` as the contract says, casting inside the graph.

    ONNX Runtime has no double kernel for the ``Imputer`` op skl2onnx emits, so the stand-in
    converts with float inputs and prepends one ``Cast`` per numeric input.
    """
    from onnx import TensorProto, helper

    casts = []
    for graph_input in onx.graph.input:
        if graph_input.name in names:
            inner = f"{graph_input.name}__float"
            for node in onx.graph.node:
                node.input[:] = [inner if x == graph_input.name else x for x in node.input]
            casts.append(
                helper.make_node("Cast", [graph_input.name], [inner], to=TensorProto.FLOAT)
            )
            graph_input.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in reversed(casts):
        onx.graph.node.insert(0, node)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory) -> Path:
    """The model directory the server serves (swap for the real export core when it lands)."""
    return build_standin_export(tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(scope="session")
def second_model(tmp_path_factory) -> Path:
    """A genuinely different version of the same model (another regularisation strength)."""
    return build_standin_export(tmp_path_factory.mktemp("export-v2") / "model", c=0.02)


@pytest.fixture(scope="session")
def golden(exported_model) -> dict:
    return json.loads((exported_model / "golden.json").read_text())


@pytest.fixture
def row(golden) -> dict:
    """A complete, valid raw row (the first golden row)."""
    return dict(golden["rows"][0]["inputs"])


def metric_samples(text: str) -> dict[tuple, float]:
    """Prometheus text -> ``{(sample name, sorted label items): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def tamper_golden(model_dir: Path, out_dir: Path) -> Path:
    """A copy of ``model_dir`` whose golden probabilities no longer match the model."""
    shutil.copytree(model_dir, out_dir)
    golden = json.loads((out_dir / "golden.json").read_text())
    golden["rows"][1]["probabilities"] = [1.0 / 3] * 3
    (out_dir / "golden.json").write_text(json.dumps(golden))
    return out_dir


@pytest.fixture
def make_app(exported_model, tmp_path):
    """``make_app(**overrides)``: the real app factory on the exported model, isolated from
    the caller's environment (its own runtime dir, no token unless given)."""
    from serving.app import create_app
    from serving.config import ServingConfig

    created = []

    def make(**overrides):
        overrides.setdefault("model_dir", exported_model)
        overrides.setdefault("runtime_dir", tmp_path / f"runtime-{len(created)}")
        app = create_app(ServingConfig.from_env({}, **overrides))
        created.append(app)
        return app

    yield make
    for app in created:
        state = app.extensions["serving"]
        state.stop.set()
        if state.watcher is not None:
            state.watcher.stop()
        state.store.close()


@pytest.fixture
def client(make_app):
    return make_app().test_client()


# ---------------------------------------------------------------------- real gunicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornServer:
    """``gunicorn -c serving/gunicorn.conf.py 'serving.app:create_app()'`` on a free port."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"gunicorn-{self.port}.log"
        self.access_log = log_dir / f"access-{self.port}.log"
        full_env = {
            **os.environ,
            "SERVING_BIND": f"127.0.0.1:{self.port}",
            "SERVING_ACCESS_LOG": str(self.access_log),
            "SERVING_WORKERS": "2",
            **env,
        }
        self.workers = float(full_env["SERVING_WORKERS"])
        for key in ("SERVING_API_TOKEN", "SERVING_API_TOKEN_FILE"):
            if key not in env:
                full_env.pop(key, None)
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-c",
                str(REPO_ROOT / "serving" / "gunicorn.conf.py"),
                "serving.app:create_app()",
            ],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, deadline_s: float = 90.0) -> None:
        """Wait until every worker has its model (a busy machine boots them one by one)."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited {self.proc.returncode}:\n{self.log()}")
            try:
                text = requests.get(self.url + "/metrics", timeout=2).text
                if metric_samples(text).get(("serving_ready_workers", ())) == self.workers:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn not ready within {deadline_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def master_maps(self) -> str:
        """The shared objects mapped into the master process."""
        return Path(f"/proc/{self.proc.pid}/maps").read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def gunicorn_server(tmp_path) -> Iterator:
    """``gunicorn_server(**env)`` starts a server and waits until it is ready."""
    servers: list[GunicornServer] = []

    def start(wait: bool = True, **env: str) -> GunicornServer:
        server = GunicornServer(env, tmp_path)
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


# ---------------------------------------------------------------------- MLflow registry


class Registry:
    """A real MLflow store (sqlite + local artifacts) in a temp dir, for registry tests."""

    def __init__(self, root: Path):
        import mlflow

        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self.client.create_experiment(
            "serving-tests", artifact_location=(root / "artifacts").as_uri()
        )

    def register_onnx_flavor(self, name: str, model_dir: Path) -> str:
        """As the pipeline does: ``mlflow.onnx.log_model`` with the descriptor and golden file
        as ``extra_files``; returns the new version."""
        import mlflow
        import onnx

        # Through the environment, not mlflow.set_tracking_uri: a process-wide setting would
        # leak into every later test of the session.
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        try:
            with mlflow.start_run(experiment_id=self.experiment_id):
                info = mlflow.onnx.log_model(
                    onnx.load(model_dir / "model.onnx"),
                    name="model",
                    extra_files=[str(model_dir / "model.json"), str(model_dir / "golden.json")],
                    registered_model_name=name,
                )
        finally:
            if previous is None:
                del os.environ["MLFLOW_TRACKING_URI"]
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous
        return str(info.registered_model_version)

    def register_directory(self, name: str, model_dir: Path) -> str:
        """The export directory logged as plain artifacts and registered as a version."""
        from mlflow.exceptions import MlflowException

        run = self.client.create_run(self.experiment_id)
        self.client.log_artifacts(run.info.run_id, str(model_dir), "model")
        self.client.set_terminated(run.info.run_id)
        with contextlib.suppress(MlflowException):  # already registered
            self.client.create_registered_model(name)
        version = self.client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        return str(version.version)

    def point(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Registry:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return Registry(tmp_path_factory.mktemp("mlflow"))
