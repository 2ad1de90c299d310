"""Acceptance: the real server's own logs, through the monitor.

The server (``python -m serving.server``, as ``make serve`` runs it) serves the exported model
with its prediction and feedback logs on. Traffic drawn from the test split, then the same rows
with one feature shifted, each in its own time window; people's feedback for every row. The
monitor on the first window finds no drift; on the second, drift on exactly the shifted
feature and on the prediction; and its live metric equals scikit-learn's F1 computed from the
HTTP responses, independently of both logs.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import requests
from sklearn.metrics import f1_score

from pipeline.stages.monitor import main as monitor_main
from tests.conftest import REPO_ROOT
from tests.integration.conftest import write_params
from tests.monitoring.stack import Server, wait_for_lines
from tests.serving.conftest import build_export

pytestmark = pytest.mark.monitoring

SHIFTED, SHIFT = "bill_length_mm", 8.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _send(url: str, frame, features) -> list[dict]:
    """One request per row; the response's request id, label and variant."""
    rows = frame[features].astype(object).where(frame[features].notna(), None)
    answers = []
    for row in rows.to_dict("records"):
        reply = requests.post(url + "/predict", json={"instances": [row]}, timeout=30)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert reply.headers["X-Request-ID"] == body["request_id"]
        answers.append(body)
    return answers


@pytest.fixture(scope="module")
def served(tmp_path_factory, splits, contract):
    root = tmp_path_factory.mktemp("acceptance")
    logs = root / "logs"
    logs.mkdir()
    server = Server(
        {
            "SERVING_MODEL_DIR": str(build_export(root / "model")),
            "SERVING_PREDICTION_LOG": str(logs / "predictions.jsonl"),
            "SERVING_PREDICTION_LOG_RATE_LIMIT": "0",  # every row: both windows are counted
            "SERVING_FEEDBACK_LOG": str(logs / "feedback.jsonl"),
        },
        root,
        "server",
    )
    try:
        server.wait_ready()
        features = contract.feature_names
        t0 = _now()
        first = _send(server.url, splits.test, features)
        wait_for_lines(logs / "predictions.jsonl", len(first))
        time.sleep(0.01)
        t1 = _now()
        shifted = splits.test.copy()
        shifted[SHIFTED] = shifted[SHIFTED] + SHIFT
        second = _send(server.url, shifted, features)
        wait_for_lines(logs / "predictions.jsonl", len(first) + len(second))
        time.sleep(0.01)
        t2 = _now()
        truth = splits.test[contract.target].astype(str).tolist()
        items = [
            {"request_id": a["request_id"], "row": 0, "actual": y}
            for a, y in zip(first + second, truth + truth, strict=True)
        ]
        reply = requests.post(server.url + "/feedback", json={"items": items}, timeout=30)
        assert reply.status_code in (200, 202), reply.text
        wait_for_lines(logs / "feedback.jsonl", len(items))
    finally:
        server.stop()

    train = root / "train.parquet"
    splits.train.to_parquet(train)
    metrics = root / "metrics.json"
    metrics.write_text(json.dumps({"f1_macro": 1.0}))
    params = write_params(
        REPO_ROOT / "params.yaml",
        root / "params.yaml",
        **{"monitor.min_rows": 50, "data.contract": str(REPO_ROOT / "data" / "contract.yaml")},
    )

    def monitor(start: str, end: str, name: str) -> dict:
        out = root / name
        argv = ["--params", str(params), "--predictions", str(logs / "predictions.jsonl"),
                "--feedback", str(logs / "feedback.jsonl"), "--reference", str(train),
                "--test-metrics", str(metrics), "--out", str(out),
                "--start", start, "--end", end]  # fmt: skip
        assert monitor_main(argv) == 0
        return json.loads((out / "summary.json").read_text())

    return {
        "first": (monitor(t0, t1, "first"), first),
        "second": (monitor(t1, t2, "second"), second),
        "truth": truth,
        "log": (logs / "predictions.jsonl").read_text().splitlines(),
    }


def test_the_server_logs_the_shared_format(served, contract):
    record = json.loads(served["log"][0])
    assert set(record) == {"ts", "request_id", "row", "model", "variant", "served", "inputs",
                           "output", "latency_ms"}  # fmt: skip
    assert set(record["inputs"]) == set(contract.feature_names)
    assert record["variant"] == "champion" and record["served"] is True
    assert set(record["output"]) == {"label", "probabilities"}
    assert len(served["log"]) == 2 * 69


def test_test_split_traffic_does_not_drift(served):
    summary, answers = served["first"]
    assert summary["volume"]["rows"] == len(answers) == 69
    assert summary["status"] == "ok" and summary["retrain"] is False
    assert summary["drift"]["drifted_features"] == []
    assert summary["drift"]["prediction"]["drifted"] is False


def test_a_shifted_feature_drifts_alone_and_moves_the_predictions(served):
    summary, answers = served["second"]
    assert summary["volume"]["rows"] == len(answers) == 69
    assert summary["drift"]["drifted_features"] == [SHIFTED]
    assert summary["drift"]["prediction"]["drifted"] is True
    assert summary["retrain"] is True
    assert "the predictions drifted" in " ".join(summary["reasons"])


@pytest.mark.parametrize("window", ["first", "second"])
def test_live_metric_matches_an_independent_computation(served, window):
    summary, answers = served[window]
    labels = [a["predictions"][0]["label"] for a in answers]
    expected = f1_score(served["truth"], labels, average="macro")
    live = summary["live_metric"]
    assert live["metric"] == "f1_macro" and live["rows"] == 69
    assert live["value"] == pytest.approx(expected, abs=1e-6)
    assert live["test_value"] == 1.0
    if window == "second":
        assert expected < 0.9  # the shift makes the model wrong, and the monitor sees it
        assert live["degraded"] is True


# ---------------------------------------------------------------------- a regression model
REGRESSION_CONTRACT = """
rows: {min: 10}
columns:
  body_mass_g: {type: numeric, role: target, max_missing: 0.0}
  "bill length (mm)": {type: numeric, max_missing: 0.0}
  flipper_length_mm: {type: numeric, max_missing: 0.0}
  island: {type: categorical, categories: [Biscoe, Dream, Torgersen], max_missing: 0.0}
"""


@pytest.fixture(scope="module")
def regression_served(tmp_path_factory, splits):
    """A regression server (values, ``serving_prediction_value``) and the monitor on its log,
    with the true body mass as feedback."""
    from tests.serving.conftest import build_regression_export

    root = tmp_path_factory.mktemp("acceptance-regression")
    logs = root / "logs"
    columns = {"bill_length_mm": "bill length (mm)"}
    keep = ["bill length (mm)", "flipper_length_mm", "island", "body_mass_g"]

    def frame(split):
        return split.rename(columns=columns)[keep].dropna().reset_index(drop=True)

    test, train = frame(splits.test), frame(splits.train)
    server = Server(
        {
            "SERVING_MODEL_DIR": str(build_regression_export(root / "model")),
            "SERVING_PREDICTION_LOG": str(logs / "predictions.jsonl"),
            "SERVING_PREDICTION_LOG_RATE_LIMIT": "0",  # every row: the windows are counted
            "SERVING_FEEDBACK_LOG": str(logs / "feedback.jsonl"),
            "SERVING_WORKERS": "1",
        },
        root,
        "server",
    )
    try:
        server.wait_ready()
        answers = _send(server.url, test, keep[:3])
        items = [
            {"request_id": a["request_id"], "actual": float(y)}
            for a, y in zip(answers, test["body_mass_g"], strict=True)
        ]
        reply = requests.post(server.url + "/feedback", json={"items": items}, timeout=30)
        assert reply.status_code in (200, 202), reply.text
        wait_for_lines(logs / "predictions.jsonl", len(answers))
        wait_for_lines(logs / "feedback.jsonl", len(items))
    finally:
        server.stop()
    (root / "contract.yaml").write_text(REGRESSION_CONTRACT)
    train.to_parquet(root / "train.parquet")
    (root / "metrics.json").write_text(json.dumps({"rmse": 300.0}))
    params = write_params(
        REPO_ROOT / "params.yaml",
        root / "params.yaml",
        **{
            "monitor.min_rows": 20,
            "data.contract": str(root / "contract.yaml"),
            "registry.model_name": "penguin-mass-regressor",
        },  # the export's name
    )
    argv = ["--params", str(params), "--predictions", str(logs / "predictions.jsonl"),
            "--feedback", str(logs / "feedback.jsonl"), "--reference", str(root / "train.parquet"),
            "--test-metrics", str(root / "metrics.json"), "--out", str(root / "report"),
            "--start", "2000-01-01T00:00:00Z"]  # fmt: skip
    assert monitor_main(argv) == 0
    summary = json.loads((root / "report" / "summary.json").read_text())
    return summary, answers, test


def test_a_regression_server_through_the_monitor(regression_served):
    summary, answers, test = regression_served
    values = [a["predictions"][0] for a in answers]
    assert all(isinstance(v, float) for v in values)
    assert summary["task"] == "regression"
    assert summary["volume"]["rows"] == len(test) > 20
    # The same rows as the training split's distribution: no feature drifts.
    assert summary["drift"]["drifted_features"] == []
    # The stand-in model predicts about 300 where penguins weigh about 4,200 g.
    prediction = summary["drift"]["prediction"]
    assert (prediction["method"], prediction["drifted"]) == ("ks", True)
    assert summary["predictions"]["p50"] < 500
    rmse = float(np.sqrt(np.mean((np.array(values) - test["body_mass_g"].to_numpy()) ** 2)))
    live = summary["live_metric"]
    assert (live["metric"], live["rows"]) == ("rmse", len(test))
    assert live["value"] == pytest.approx(rmse, rel=1e-6)
    assert live["degraded"] is True and summary["retrain"] is True
