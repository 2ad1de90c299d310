"""The app under a real gunicorn process, configured by serving/gunicorn.conf.py."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import REPO_ROOT
from tests.serving.conftest import is_unseen, metric_samples

pytestmark = pytest.mark.serving

TOKEN = "gunicorn-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_config_defaults(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SERVING_"):
            monkeypatch.delenv(key)
    conf = runpy.run_path(str(REPO_ROOT / "serving" / "gunicorn.conf.py"))
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["workers"] == conf["usable_cpus"]() <= len(os.sched_getaffinity(0))
    assert conf["worker_class"] == "sync"
    assert conf["max_requests"] == 100_000
    assert conf["max_requests_jitter"] == 10_000
    assert conf["graceful_timeout"] < 10 < conf["timeout"]
    assert conf["logger_class"] == "serving.accesslog.JsonLinesLogger"
    assert conf["accesslog"] == "-"
    assert conf["control_socket_disable"] is True
    assert conf["preload_app"] is False
    assert os.environ["SERVING_ORT_INTRA_OP_THREADS"] == "1"
    assert os.environ["SERVING_ORT_INTER_OP_THREADS"] == "1"


def test_config_environment_overrides(monkeypatch):
    monkeypatch.setenv("SERVING_BIND", "0.0.0.0:9000")
    monkeypatch.setenv("SERVING_WORKERS", "5")
    monkeypatch.setenv("SERVING_MAX_REQUESTS", "1000")
    monkeypatch.setenv("SERVING_ACCESS_LOG", "")
    conf = runpy.run_path(str(REPO_ROOT / "serving" / "gunicorn.conf.py"))
    assert conf["bind"] == ["0.0.0.0:9000"]
    assert conf["workers"] == 5
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (1000, 100)
    assert conf["accesslog"] is None


def test_predict_health_metrics_across_workers(gunicorn_server, exported_model, golden, tmp_path):
    runtime = tmp_path / "runtime"
    server = gunicorn_server(
        SERVING_MODEL_DIR=str(exported_model),
        SERVING_API_TOKEN=TOKEN,
        SERVING_RUNTIME_DIR=str(runtime),
        SERVING_ADDRESS_FILE=str(tmp_path / "address"),
        HOME="/nonexistent",  # gunicorn 26's control socket would need a writable home
    )
    # The image's HEALTHCHECK finds the bound port in the address file, not in SERVING_BIND.
    assert (tmp_path / "address").read_text() == f"127.0.0.1:{server.port}\n"
    healthcheck = subprocess.run(
        [sys.executable, "-m", "serving.healthcheck"],
        env={
            **os.environ,
            "SERVING_ADDRESS_FILE": str(tmp_path / "address"),
            "SERVING_BIND": "127.0.0.1:1",
        },
        capture_output=True,
        text=True,
    )
    assert healthcheck.returncode == 0, healthcheck.stderr
    rows = [r for r in golden["rows"] if not is_unseen(r)]

    def call(i: int):
        r = rows[i % len(rows)]
        return r, requests.post(
            server.url + "/predict", json={"instances": [r["inputs"]]}, headers=AUTH, timeout=10
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(120)))
    for expected, response in results:
        assert response.status_code == 200
        (prediction,) = response.json()["predictions"]
        assert prediction["label"] == expected["label"]
        assert list(prediction["probabilities"].values()) == pytest.approx(
            expected["probabilities"], abs=golden["tolerance"]
        )

    denied = requests.post(server.url + "/predict", json={"instances": [rows[0]["inputs"]]})
    assert denied.status_code == 401
    assert denied.json()["error"]["message"] == "missing bearer token"
    assert requests.get(server.url + "/health/live").json() == {"status": "alive"}
    assert requests.get(server.url + "/health/ready").json()["status"] == "ready"
    assert requests.get(server.url + "/metadata").status_code == 401

    text = requests.get(server.url + "/metrics").text
    samples = metric_samples(text)
    assert samples[("serving_requests_total", (("endpoint", "/predict"), ("status", "200")))] == 120
    assert samples[("serving_requests_total", (("endpoint", "/predict"), ("status", "401")))] == 1
    assert samples[("serving_ready_workers", ())] == 2.0, text
    classes = sum(
        samples[("serving_predictions_total", (("class", c),))]
        for c in ("Adelie", "Chinstrap", "Gentoo")
    )
    assert classes == 120
    assert samples[("serving_request_duration_seconds_count", (("endpoint", "/predict"),))] == 121

    # Two workers, two slots, each holding part of the count; /metrics summed them.
    from serving.metrics import MetricsStore

    per_slot = []
    for names_file in sorted((runtime / "metrics").glob("slot-*.json")):
        names = json.loads(names_file.read_text())
        values = memoryview(names_file.with_suffix(".bin").read_bytes()).cast("d")
        key = json.dumps(
            ["serving_requests", [["endpoint", "/predict"], ["status", "200"]]],
            separators=(",", ":"),
        )
        per_slot.append(values[names.index(key)] if key in names else 0.0)
    assert len(per_slot) == 2
    assert sum(per_slot) == 120 and min(per_slot) > 0, per_slot
    assert MetricsStore  # the reader above mirrors MetricsStore's file layout

    access = [json.loads(line) for line in server.access_log.read_text().splitlines()]
    predicts = [entry for entry in access if entry["path"] == "/predict"]
    assert len(predicts) == 121
    assert {e["status"] for e in predicts} == {200, 401}
    assert len({e["pid"] for e in predicts}) == 2
    assert set(predicts[0]) == {
        "time",
        "remote",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "user_agent",
        "pid",
    }
    assert "Control server error" not in server.log()

    assert server.stop() == 0  # SIGTERM: graceful shutdown, clean exit
    healthcheck = subprocess.run(
        [sys.executable, "-m", "serving.healthcheck"],
        env={**os.environ, "SERVING_ADDRESS_FILE": str(tmp_path / "address")},
        capture_output=True,
        text=True,
    )
    assert healthcheck.returncode == 1
    assert f"http://127.0.0.1:{server.port}/health/ready: " in healthcheck.stderr
    assert "Shutting down: Master" in server.log()
    assert not runtime.joinpath("current.json").exists()


def test_chunked_bodies(gunicorn_server, exported_model, row):
    server = gunicorn_server(SERVING_MODEL_DIR=str(exported_model), SERVING_MAX_BODY_BYTES="2000")
    body = json.dumps({"instances": [row]}).encode()

    def chunks(data: bytes):
        yield from (data[i : i + 50] for i in range(0, len(data), 50))

    ok = requests.post(
        server.url + "/predict", data=chunks(body), headers={"Content-Type": "application/json"}
    )
    assert ok.request.headers["Transfer-Encoding"] == "chunked"
    assert ok.status_code == 200
    big = json.dumps({"instances": [row] * 20}).encode()
    too_big = requests.post(
        server.url + "/predict", data=chunks(big), headers={"Content-Type": "application/json"}
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["message"] == "the body exceeds 2000 bytes"


def test_recycled_workers_keep_counters_and_slots(
    gunicorn_server, exported_model, row, golden_row, tmp_path
):
    runtime = tmp_path / "runtime"
    server = gunicorn_server(
        SERVING_MODEL_DIR=str(exported_model),
        SERVING_RUNTIME_DIR=str(runtime),
        SERVING_MAX_REQUESTS="25",
        SERVING_MAX_REQUESTS_JITTER="5",
    )

    def call(_):
        return requests.post(server.url + "/predict", json={"instances": [row]}, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        statuses = [r.status_code for r in pool.map(call, range(200))]
    assert statuses == [200] * 200
    assert server.log().count("Autorestarting worker") >= 4
    samples = metric_samples(requests.get(server.url + "/metrics").text)
    assert samples[("serving_requests_total", (("endpoint", "/predict"), ("status", "200")))] == 200
    assert samples[("serving_predictions_total", (("class", golden_row["label"]),))] == 200
    # Recycled workers adopt dead slots: files stay bounded by the processes alive at once.
    assert len(list((runtime / "metrics").glob("slot-*.lock"))) <= 3
    # A worker forked from a master that imported ONNX Runtime hangs when it exits.
    assert "onnxruntime" not in server.master_maps()
