"""Serving fixtures: an exported model directory, the Flask app and a real server process.

``build_export`` trains a small model and writes its directory with the export stage's own
core (``model.onnx``, ``model.json``, ``golden.json``), so these tests serve exactly what the
pipeline ships and never depend on ``models/export`` existing in the checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pipeline.ports import free_port
from pipeline.stages.export import UNSEEN_CATEGORY
from tests.conftest import REPO_ROOT

MODEL_NAME = "penguins-classifier"
RUN_ID = "serving-tests"
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


def build_export(out_dir: Path, *, c: float = 1.0, name: str = MODEL_NAME) -> Path:
    """Train logistic regression on Palmer Penguins and export it with the real export core.

    The same code path as the pipeline's ``train`` and ``export`` stages, minus MLflow, so
    the server is tested on exactly what the pipeline ships. ``c`` is LogisticRegression's C,
    so two calls give two genuinely different model versions.
    """
    from dataclasses import replace

    from palmerpenguins import load_penguins

    from pipeline.config import load_params
    from pipeline.contract import load_contract
    from pipeline.stages.evaluate import compute_metrics
    from pipeline.stages.export import Lineage, export_model, lineage_params
    from pipeline.stages.preprocess import fit_preprocessor, split_data, to_model_frame
    from pipeline.stages.train import NativeModel, train_model

    params = load_params(REPO_ROOT / "params.yaml")
    train = replace(
        params.train,
        estimator="logistic_regression",
        logistic_regression=replace(params.train.logistic_regression, C=c),
    )
    params = replace(params, train=train, registry=replace(params.registry, model_name=name))
    contract = load_contract(REPO_ROOT / "data" / "contract.yaml")
    p = params.preprocess
    splits = split_data(load_penguins(), contract.target, p.seed, p.test_size, p.val_size)
    preprocessor = fit_preprocessor(splits.train, contract)

    def features(frame):
        return preprocessor.transform(to_model_frame(frame, contract))

    def labels(frame):
        return frame[contract.target].astype(str).to_numpy()

    result = train_model(
        train.estimator,
        train,
        features(splits.train),
        labels(splits.train),
        features(splits.val),
        labels(splits.val),
    )
    native = NativeModel(
        preprocessor, result.model, result.family, train.estimator, result.classes, contract
    )
    metrics = compute_metrics(
        labels(splits.test), native.predict_proba(splits.test), native.classes
    )
    lineage = Lineage(RUN_ID, "unknown", "unknown", lineage_params(params))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    export_model(native, params, splits.test, metrics, lineage, out_dir)
    return out_dir


def is_unseen(golden_row: dict) -> bool:
    """The golden row the export stage made with an unseen value in every categorical column."""
    return golden_row["inputs"]["island"] == UNSEEN_CATEGORY


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory) -> Path:
    """The model directory the server serves, written by the real export core."""
    return build_export(tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(scope="session")
def second_model(tmp_path_factory) -> Path:
    """A genuinely different version of the same model (another regularisation strength)."""
    return build_export(tmp_path_factory.mktemp("export-v2") / "model", c=0.02)


@pytest.fixture(scope="session")
def golden(exported_model) -> dict:
    return json.loads((exported_model / "golden.json").read_text())


@pytest.fixture
def golden_row(golden) -> dict:
    """The first golden row with every value present and known categories."""
    return next(
        r
        for r in golden["rows"]
        if not is_unseen(r) and all(v is not None for v in r["inputs"].values())
    )


@pytest.fixture
def row(golden_row) -> dict:
    """A complete, valid raw row."""
    return dict(golden_row["inputs"])


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


# ---------------------------------------------------------------------- real server


class ServerProcess:
    """``python -m serving.server`` (granian + the app) on a free port, as the image runs it."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.port = free_port()
        self.host = "127.0.0.1"
        self.log_path = log_dir / f"server-{self.port}.log"
        self.out_path = log_dir / f"server-{self.port}.out"
        self.access_log = log_dir / f"access-{self.port}.log"
        full_env = {
            **os.environ,
            "SERVING_BIND": f"127.0.0.1:{self.port}",
            "SERVING_ACCESS_LOG": str(self.access_log),
            "SERVING_WORKERS": "2",
            "SERVING_DRAIN_SECONDS": "0.5",
            **env,
        }
        self.scheme = "https" if full_env.get("SERVING_TLS_CERT") else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.verify: str | bool = full_env.get("SERVING_TLS_CERT") or True
        self.workers = float(full_env["SERVING_WORKERS"])
        for key in ("SERVING_API_TOKEN", "SERVING_API_TOKEN_FILE"):
            if key not in env:
                full_env.pop(key, None)
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self._out = open(self.out_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.server"],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=self._out,
            stderr=self._log,
        )

    def wait_ready(self, deadline_s: float = 90.0) -> None:
        """Wait until every worker has its model (a busy machine boots them one by one)."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                text = requests.get(self.url + "/metrics", timeout=2, verify=self.verify).text
                if metric_samples(text).get(("serving_ready_workers", ())) == self.workers:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {deadline_s} s:\n{self.log()}")

    def log(self) -> str:
        """What the server wrote: stderr (its own and granian's messages), then stdout."""
        return self.log_path.read_text() + self.stdout()

    def stdout(self) -> str:
        return self.out_path.read_text()

    def worker_pids(self) -> list[int]:
        """granian's worker processes (children of granian's main, itself our child)."""
        granian = _children(self.proc.pid)
        return [pid for main in granian for pid in _children(main)]

    def kill_worker(self, victim: int, timeout: float = 60) -> None:
        """SIGKILL worker ``victim``; return once granian has replaced it and all are ready."""
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) == self.workers and victim not in pids:
                break
            time.sleep(0.2)
        self.wait_ready()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._out.close()
        return self.proc.returncode


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in path.read_text().split()]
    return []


@pytest.fixture
def live_server(tmp_path) -> Iterator:
    """``live_server(**env)`` starts ``python -m serving.server`` and waits until it is ready."""
    servers: list[ServerProcess] = []

    def start(wait: bool = True, **env: str) -> ServerProcess:
        server = ServerProcess(env, tmp_path)
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
        # leak into every later test of the session. One left by an earlier test outranks the
        # variable, so it is cleared first.
        from tests.conftest import forget_tracking_uri

        forget_tracking_uri()
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


# ---------------------------------------------------------------------- a regression export
REGRESSION_NAME = "penguin-mass-regressor"
#: Column names a CSV can hold but an ONNX input cannot: the descriptor maps them.
REGRESSION_COLUMNS = ("bill length (mm)", "flipper_length_mm", "island")
_WEIGHTS = (2.0, 0.5, 10.0)
_BIAS = 100.0


def build_regression_export(out_dir: Path) -> Path:
    """A tiny regression model directory: an ONNX graph ``prediction = 2 * bill + 0.5 *
    flipper + 10 * island code + 100`` (``float [N, 1]``, as the pipeline's regressors
    export), its descriptor v2 (``task: regression``, one input renamed for ONNX) and golden
    rows computed by ONNX Runtime."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from model_spec.descriptor import (
        CATEGORICAL,
        NUMERIC,
        InputSpec,
        ModelDescriptor,
        OnnxSpec,
        onnx_input_names,
        outputs_for,
    )
    from model_spec.feed import build_feed
    from model_spec.task import Task

    names = onnx_input_names(REGRESSION_COLUMNS)
    bill, flipper, island = names
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                [island],
                ["island_code"],
                domain="ai.onnx.ml",
                keys_strings=["Biscoe", "Dream", "Torgersen"],
                values_floats=[1.0, 2.0, 3.0],
                default_float=0.0,
            ),
            helper.make_node("Cast", ["island_code"], ["island_d"], to=TensorProto.DOUBLE),
            helper.make_node("Concat", [bill, flipper, "island_d"], ["x"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Cast", ["y"], ["prediction"], to=TensorProto.FLOAT),
        ],
        "regressor",
        [
            helper.make_tensor_value_info(bill, TensorProto.DOUBLE, [None, 1]),
            helper.make_tensor_value_info(flipper, TensorProto.DOUBLE, [None, 1]),
            helper.make_tensor_value_info(island, TensorProto.STRING, [None, 1]),
        ],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        initializer=[
            helper.make_tensor("w", TensorProto.DOUBLE, [3, 1], list(_WEIGHTS)),
            helper.make_tensor("b", TensorProto.DOUBLE, [1], [_BIAS]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out_dir / "model.onnx")
    inputs = (
        InputSpec("bill length (mm)", bill, NUMERIC, False, 25.0, 70.0),
        InputSpec("flipper_length_mm", flipper, NUMERIC, False, 160.0, 240.0),
        InputSpec(
            "island", island, CATEGORICAL, False, categories=("Biscoe", "Dream", "Torgersen")
        ),
    )
    descriptor = ModelDescriptor(
        name=REGRESSION_NAME,
        task=Task.REGRESSION,
        estimator="linear_regression",
        family="sklearn",
        target="body_mass_g",
        inputs=inputs,
        onnx=OnnxSpec(outputs=tuple(outputs_for(Task.REGRESSION))),
        metrics={"rmse": 300.0},
    )
    descriptor.write(out_dir)
    rows = [
        {"bill length (mm)": 40.0, "flipper_length_mm": 190.0, "island": "Biscoe"},
        {"bill length (mm)": 50.0, "flipper_length_mm": 220.0, "island": "Dream"},
        {"bill length (mm)": 45.5, "flipper_length_mm": 200.0, "island": "Torgersen"},
    ]
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = build_feed(descriptor, {c: [r[c] for r in rows] for c in REGRESSION_COLUMNS})
    (predictions,) = session.run(["prediction"], feed)
    golden = {
        "tolerance": 1e-5,
        "rows": [
            {"case": "typical", "inputs": r, "prediction": float(p)}
            for r, p in zip(rows, np.asarray(predictions).reshape(-1), strict=True)
        ],
    }
    (out_dir / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
    return out_dir


def expected_value(row: dict) -> float:
    code = {"Biscoe": 1.0, "Dream": 2.0, "Torgersen": 3.0}[row["island"]]
    w = _WEIGHTS
    return w[0] * row["bill length (mm)"] + w[1] * row["flipper_length_mm"] + w[2] * code + _BIAS


@pytest.fixture(scope="session")
def regression_model(tmp_path_factory) -> Path:
    return build_regression_export(tmp_path_factory.mktemp("regression") / "model")
