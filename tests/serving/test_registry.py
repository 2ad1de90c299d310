"""Serving from the MLflow registry (a real sqlite store): start-up, reload, refusal."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.serving.conftest import metric_samples, tamper_golden

pytestmark = pytest.mark.serving


@pytest.fixture
def versions(registry, exported_model, second_model, tmp_path, request):
    """A registered model with v1 (ONNX flavour), v2 (another fit) and v3 (v2, bad golden)."""
    name = f"penguins-{request.node.name[-40:].replace('[', '-').replace(']', '')}"
    v1 = registry.register_onnx_flavor(name, exported_model)
    v2 = registry.register_directory(name, second_model)
    v3 = registry.register_directory(name, tamper_golden(second_model, tmp_path / "v3"))
    registry.point(name, "champion", v1)
    return name, v1, v2, v3


def test_in_process_registry_start_reload_and_refusal(
    make_app, registry, versions, monkeypatch, golden
):
    name, v1, v2, v3 = versions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    app = make_app(model_uri=f"models:/{name}@champion", reload_interval=3600)
    client = app.test_client()
    watcher = app.extensions["serving"].watcher
    row = golden["rows"][0]["inputs"]

    ready = client.get("/health/ready").get_json()
    assert ready["model"]["version"] == v1
    assert client.get("/metadata").get_json()["source"] == "registry"
    first = client.post("/predict", json={"instances": [row]}).get_json()
    assert first["model"]["version"] == v1

    registry.point(name, "champion", v2)
    assert watcher.poll_once() is True
    second = client.post("/predict", json={"instances": [row]}).get_json()
    assert second["model"]["version"] == v2
    assert second["predictions"] != first["predictions"]  # really another model

    registry.point(name, "champion", v3)
    assert watcher.poll_once() is False
    assert watcher.poll_once() is False  # a refused version is not retried
    third = client.post("/predict", json={"instances": [row]}).get_json()
    assert third["predictions"] == second["predictions"]
    assert third["model"] == second["model"]
    assert client.get("/health/ready").status_code == 200

    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    assert (
        samples[
            ("serving_model_reload_failures_total", (("step", "golden"), ("variant", "champion")))
        ]
        == 1.0
    )
    assert samples[("serving_model_reloads_total", (("variant", "champion"),))] == 1.0
    info = (("name", "penguins-classifier"), ("source", "registry"), ("variant", "champion"),
            ("version", v2))  # fmt: skip
    assert samples[("serving_model_info", info)] == 1.0
    old = (("name", "penguins-classifier"), ("source", "registry"), ("variant", "champion"),
           ("version", v1))  # fmt: skip
    assert samples[("serving_model_info", old)] == 0.0


def test_unknown_alias_leaves_the_server_live_but_not_ready(
    make_app, registry, versions, monkeypatch
):
    name = versions[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    client = make_app(model_uri=f"models:/{name}@nobody", reload_interval=0).test_client()
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["reason"].startswith(f"models:/{name}@nobody: ")
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    assert (
        samples[
            ("serving_model_reload_failures_total", (("step", "resolve"), ("variant", "champion")))
        ]
        == 1.0
    )


class Hammer:
    """Sends one-row predictions back to back, remembering every status and version."""

    def __init__(self, url: str, row: dict):
        self.url, self.row = url, row
        self.results: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                response = session.post(
                    self.url + "/predict", json={"instances": [self.row]}, timeout=10
                )
                version = response.json().get("model", {}).get("version")
                self.results.append((response.status_code, version))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def wait_for(predicate, what: str, deadline_s: float = 90.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def test_server_follows_the_alias_without_failing_requests(live_server, registry, versions, golden):
    name, v1, v2, v3 = versions
    server = live_server(
        SERVING_MODEL_URI=f"models:/{name}@champion",
        MLFLOW_TRACKING_URI=registry.uri,
        SERVING_RELOAD_INTERVAL="1",
        SERVING_WORKERS="2",
    )
    runtime = Path(server_runtime_dir(server))
    assert requests.get(server.url + "/health/ready").json()["model"]["version"] == v1

    def metrics():
        return metric_samples(requests.get(server.url + "/metrics").text)

    def workers_on(version):
        key = (
            "serving_model_info",
            (
                ("name", "penguins-classifier"),
                ("source", "registry"),
                ("variant", "champion"),
                ("version", version),
            ),
        )
        return metrics().get(key) == 2.0

    with Hammer(server.url, golden["rows"][0]["inputs"]) as hammer:
        wait_for(lambda: len(hammer.results) > 20, "requests on v1")
        registry.point(name, "champion", v2)
        wait_for(lambda: workers_on(v2), "both workers on v2")
        seen_v2 = len(hammer.results)
        wait_for(lambda: len(hammer.results) > seen_v2 + 20, "requests on v2")
        registry.point(name, "champion", v3)
        failures = (
            "serving_model_reload_failures_total",
            (("step", "golden"), ("variant", "champion")),
        )
        wait_for(lambda: metrics().get(failures, 0) >= 1.0, "v3 refused")
        refused_at = len(hammer.results)
        wait_for(lambda: len(hammer.results) > refused_at + 20, "requests after the refusal")

    statuses = {status for status, _ in hammer.results}
    assert statuses == {200}, f"failed requests during reload: {statuses}"
    served = [version for _, version in hammer.results]
    assert served[0] == v1 and served[-1] == v2
    assert v3 not in served
    first_v2 = served.index(v2)
    assert set(served[:first_v2]) == {v1}
    assert v1 not in served[refused_at:]
    assert set(served[refused_at:]) == {v2}
    samples = metrics()
    assert samples[failures] == 1.0  # refused once, by the launcher, before any worker saw it
    # SIGHUP restarts the workers one by one while the launcher's watcher runs; the new
    # workers start on the published v2, in the same runtime dir, with the counters kept.
    served_before = samples[
        ("serving_requests_total", (("endpoint", "/predict"), ("status", "200")))
    ]
    old_workers = set(server.worker_pids())
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not old_workers & set(server.worker_pids()), "workers restarted")
    wait_for(lambda: workers_on(v2), "restarted workers on v2")
    assert Path(server_runtime_dir(server)) == runtime
    after = metrics()[("serving_requests_total", (("endpoint", "/predict"), ("status", "200")))]
    assert after == served_before
    assert f"published version {v2} of models:/{name}@champion" in server.log()
    assert f"registry golden failed, serving what we have: version {v3}: golden row 1" in (
        server.log()
    )
    # The launcher never loads a model itself (serving.verify does, in its own process).
    assert "onnxruntime" not in Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert server.stop() == 0
    # Defect 10: the runtime dir the launcher made is gone, SIGHUP or not.
    assert not runtime.exists()


def server_runtime_dir(server) -> str:
    """The runtime dir the launcher created (its child granian inherits it)."""
    (granian,) = _children_of(server.proc.pid)
    environ = Path(f"/proc/{granian}/environ").read_bytes().split(b"\0")
    (value,) = [e for e in environ if e.startswith(b"SERVING_RUNTIME_DIR=")]
    return value.split(b"=", 1)[1].decode()


def _children_of(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_promote_and_rollback_refuse_an_unservable_version(registry, versions, monkeypatch):
    """``make promote``/``rollback`` run the server's own check before moving the alias."""
    from pipeline.errors import PipelineError
    from pipeline.registry import promote, rollback

    name, v1, v2, v3 = versions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    for v in (v2, v3):
        registry.client.set_model_version_tag(name, v, "gate_passed", "true")
    with pytest.raises(PipelineError) as refused:
        promote(name, v3, "tampered golden rows", force=True)  # hand-made: no champion gate
    message = str(refused.value)
    assert message.startswith(
        f"version {v3} of '{name}' does not reproduce its golden rows, so the prediction "
        "server would refuse it: golden row 1: probabilities differ by"
    )
    assert message.endswith("The alias was not moved.")
    assert "/tmp/" not in message
    champion = registry.client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == v1
    assert promote(name, v2, "a servable version", force=True).changed
    # Rollback checks the version it would go back to: make v1 unservable by deleting its graph.
    v1_dir = Path(registry.client.get_model_version_download_uri(name, v1).removeprefix("file://"))
    (v1_dir / "model.onnx").write_bytes(b"broken")
    with pytest.raises(PipelineError, match=f"version {v1} of '{name}' cannot be loaded"):
        rollback(name, "back")
    assert str(registry.client.get_model_version_by_alias(name, "champion").version) == v2


def test_server_started_on_an_unservable_champion_says_why(live_server, registry, versions):
    name, v1, v2, v3 = versions
    registry.point(name, "champion", v3)
    server = live_server(
        wait=False,
        SERVING_MODEL_URI=f"models:/{name}@champion",
        MLFLOW_TRACKING_URI=registry.uri,
        SERVING_RELOAD_INTERVAL="1",
    )

    def reason():
        try:
            response = requests.get(server.url + "/health/ready", timeout=2)
        except requests.ConnectionError:
            return None
        return response.status_code == 503 and "golden" in response.text and response.json()

    body = wait_for(reason, "the refusal in /health/ready")
    assert body["status"] == "not ready"
    assert body["reason"].startswith(
        f"models:/{name}@champion: no servable version yet (golden failed): version {v3}: "
        "golden row 1: probabilities differ by"
    )
    assert "/tmp" not in body["reason"] and "serving-" not in body["reason"]
    samples = metric_samples(requests.get(server.url + "/metrics").text)
    assert (
        samples[
            ("serving_model_reload_failures_total", (("step", "golden"), ("variant", "champion")))
        ]
        >= 1.0
    )
    assert samples[("serving_ready_workers", ())] == 0.0
    registry.point(name, "champion", v2)  # fixed: the server becomes ready on its own
    server.wait_ready()
    assert requests.get(server.url + "/health/ready").json()["model"]["version"] == v2
