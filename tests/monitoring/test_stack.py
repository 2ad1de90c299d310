"""A real Prometheus scrapes real servers; injected faults fire exactly their alerts.

Five scrape targets, four of them with one fault each, and the monitor's pushed drift:

- ``healthy``: serves normal traffic, then requests whose bodies arrive slowly (a slow
  client holds a sync worker; the server's latency histogram counts the time) -> p99 latency;
- ``broken``: a model whose golden check fails, so it never becomes ready, answers /predict
  with 503, and fails again when its workers are reloaded (SIGHUP) -> errors, readiness,
  reload failures;
- ``idle``: ready, never called -> no traffic;
- ``regressor``: a regression model with steady traffic -> nothing (and data for the
  dashboard's predicted-value panel);
- ``down``: a port nobody listens on -> down;
- the monitor run on the healthy server's own prediction log of traffic with one feature
  shifted, pushed to a pushgateway -> feature drift on exactly that feature, prediction drift.

The rules are the committed ones with ``for:`` shortened (tests/monitoring/stack.py). Then
every Grafana panel's query must return data from this Prometheus.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from pipeline.ports import free_port
from pipeline.stages.monitor import main as monitor_main
from tests.conftest import REPO_ROOT
from tests.integration.conftest import write_params
from tests.monitoring.conftest import MONITORING
from tests.monitoring.stack import (
    GUNICORN,
    Prometheus,
    Pushgateway,
    Server,
    wait_for_lines,
)
from tests.serving.conftest import build_export, build_regression_export, tamper_golden

pytestmark = pytest.mark.monitoring

SHIFTED = "bill_length_mm"
SHIFT = 8.0  # mm: within the contract's range, enough to move Adelie towards Chinstrap


def rows_of(frame, features) -> list[dict]:
    records = frame[features].astype(object).where(frame[features].notna(), None)
    return records.to_dict("records")


def predict(url: str, row: dict) -> requests.Response:
    return requests.post(url + "/predict", json={"instances": [row]}, timeout=30)


def slow_predict(port: int, row: dict, pieces: int = 4, pause: float = 0.2) -> bytes:
    """POST /predict whose body arrives in ``pieces`` with ``pause`` seconds between them."""
    body = json.dumps({"instances": [row]}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    step = -(-len(body) // pieces)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for i in range(0, len(body), step):
            time.sleep(pause)
            sock.sendall(body[i : i + step])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


class Traffic(threading.Thread):
    """One-row requests to each url in turn until stopped; counts the statuses."""

    def __init__(self, targets: list[tuple[str, list[dict]]]):
        super().__init__(daemon=True)
        self.targets = targets
        self.halt = threading.Event()
        self.statuses: dict[tuple[str, int], int] = {}

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            for url, rows in self.targets:
                status = predict(url, rows[i % len(rows)]).status_code
                self.statuses[(url, status)] = self.statuses.get((url, status), 0) + 1
            i += 1
            time.sleep(0.02)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, splits, contract):
    """Run the whole scenario once; the tests below read its results."""
    root = tmp_path_factory.mktemp("stack")
    model = build_export(root / "model")
    broken_model = tamper_golden(model, root / "broken-model")
    regressor = build_regression_export(root / "regressor")
    features = contract.feature_names
    rows = rows_of(splits.test, features)

    started: list = []
    try:
        gateway = Pushgateway(root)
        started.append(gateway)
        servers = {
            "healthy": Server(
                {
                    "SERVING_MODEL_DIR": str(model),
                    "SERVING_PREDICTION_LOG": str(root / "logs" / "predictions.jsonl"),
                    "SERVING_PREDICTION_LOG_RATE_LIMIT": "0",  # the shifted rows are counted
                },
                root,
                "healthy",
                GUNICORN,
            ),
            # Two workers: granian restarts them one by one on SIGHUP, so one always listens
            # (with one, connections are refused while it respawns).
            "broken": Server({"SERVING_MODEL_DIR": str(broken_model)}, root, "broken"),
            "idle": Server({"SERVING_MODEL_DIR": str(model), "SERVING_WORKERS": "1"}, root, "idle"),
            # A regression model, healthy and busy: no alert, and data for the value panel.
            "regressor": Server(
                {"SERVING_MODEL_DIR": str(regressor), "SERVING_WORKERS": "1"}, root, "regressor"
            ),
        }
        started.extend(servers.values())
        servers["healthy"].wait_ready()
        servers["idle"].wait_ready()
        servers["regressor"].wait_ready()
        servers["broken"].wait_ready(ready=False)
        gateway.wait_ready()
        down = f"127.0.0.1:{free_port()}"
        instances = {name: f"127.0.0.1:{s.port}" for name, s in servers.items()}
        instances["down"] = down
        prom = Prometheus(
            root / "prometheus",
            [instances[n] for n in ("healthy", "broken", "idle", "regressor", "down")],
            f"127.0.0.1:{gateway.port}",
            hold="3s",
        )
        started.append(prom)
        prom.wait_ready()

        # The broken server's failure counter must be seen before and after its reload.
        broken = instances["broken"]
        prom.wait_for(
            "two scrapes of the broken server",
            lambda: prom.query(f'count_over_time(up{{instance="{broken}"}}[1m]) >= 2'),
        )
        before = _reload_failures(servers["broken"])
        servers["broken"].proc.send_signal(signal.SIGHUP)  # reload its workers: they fail again
        prom.wait_for(
            "a reload failure on the broken server",
            lambda: _reload_failures(servers["broken"]) > before,
        )

        # First, before any other /predict: the shifted rows, which the server logs.
        drift = _monitor_and_push(root, servers["healthy"].url, splits, contract, gateway.url)
        regression_rows = [
            {"bill length (mm)": 40.0 + i, "flipper_length_mm": 190.0 + 2 * i, "island": island}
            for i, island in enumerate(["Biscoe", "Dream", "Torgersen"] * 4)
        ]
        traffic = Traffic(
            [
                (servers["healthy"].url, rows),
                (servers["broken"].url, rows),
                (servers["regressor"].url, regression_rows),
            ]
        )
        traffic.start()
        slow: list[bytes] = []

        def send_slow(part: list[dict]) -> None:
            for row in part:
                slow.append(slow_predict(servers["healthy"].port, row))

        threads = [threading.Thread(target=send_slow, args=(rows[i : i + 8],)) for i in (0, 8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        expected = {
            ("ServingHighLatencyP99", instances["healthy"]),
            ("ServingHighErrorRatio", broken),
            ("ServingNotReady", broken),
            ("ServingModelReloadFailures", broken),
            ("ServingNoTraffic", instances["idle"]),
            ("ServingDown", down),
            ("ModelFeatureDrift", SHIFTED),
            ("ModelPredictionDrift", "monitor"),
        }
        # On a timeout the test's own assertion shows what differs.
        with contextlib.suppress(AssertionError):
            prom.wait_for("the expected alerts", lambda: prom.alerts() == expected)
        yield {
            "prometheus": prom,
            "expected": expected,
            "firing": prom.alerts(),
            "instances": instances,
            "traffic": traffic,
            "slow": slow,
            "drift": drift,
        }
        traffic.halt.set()
        traffic.join(timeout=30)
    finally:
        for process in reversed(started):
            process.stop()


def _reload_failures(server: Server) -> float:
    try:
        samples = server.metrics()
    except requests.RequestException:  # a slow machine: ask again
        return -1.0
    return sum(
        v for (name, _), v in samples.items() if name == "serving_model_reload_failures_total"
    )


def _monitor_and_push(root: Path, url: str, splits, contract, gateway: str) -> dict:
    """Shifted test rows through the healthy server; the monitor on its prediction log; push
    the summary to the pushgateway with the CLI's ``push``."""
    frame = splits.test.copy()
    frame[SHIFTED] = frame[SHIFTED] + SHIFT
    features = contract.feature_names
    for row in rows_of(frame, features):
        reply = predict(url, row)
        assert reply.status_code == 200, reply.text
    log = root / "logs" / "predictions.jsonl"
    wait_for_lines(log, len(frame))
    train = root / "train.parquet"
    splits.train.to_parquet(train)
    params = write_params(
        REPO_ROOT / "params.yaml",
        root / "params.yaml",
        **{"monitor.min_rows": 50, "data.contract": str(REPO_ROOT / "data" / "contract.yaml")},
    )
    out = root / "report"
    common = ["--params", str(params), "--predictions", str(log), "--reference", str(train),
              "--feedback", str(root / "none.jsonl"), "--out", str(out),
              "--start", "2000-01-01T00:00:00Z"]  # fmt: skip
    assert monitor_main(common) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert monitor_main(["push", "--summary", str(out / "summary.json"),
                         "--pushgateway", gateway]) == 0  # fmt: skip
    return summary


# ---------------------------------------------------------------------- the tests
def test_injected_faults_fire_exactly_their_alerts(stack):
    assert stack["drift"]["drift"]["drifted_features"] == [SHIFTED]
    assert stack["drift"]["drift"]["prediction"]["drifted"] is True
    assert stack["firing"] == stack["expected"], (
        f"missing: {sorted(stack['expected'] - stack['firing'])}; "
        f"unexpected: {sorted(stack['firing'] - stack['expected'])}"
    )


def test_the_faults_were_real(stack):
    """What the server saw matches what was injected (not an artefact of the rules)."""
    prom, inst = stack["prometheus"], stack["instances"]
    statuses = stack["traffic"].statuses
    healthy_url = f"http://{inst['healthy']}"
    broken_url = f"http://{inst['broken']}"
    assert statuses.get((broken_url, 503), 0) > 0
    assert set(s for (u, s) in statuses if u == broken_url) == {503}
    assert set(s for (u, s) in statuses if u == healthy_url) == {200}
    regressor_url = f"http://{inst['regressor']}"
    assert set(s for (u, s) in statuses if u == regressor_url) == {200}
    assert all(reply.startswith(b"HTTP/1.1 200") for reply in stack["slow"])
    assert len(stack["slow"]) == 16
    # Above the alert's 250 ms: most slow requests (one accepted late by a busy worker has
    # part of its body already there, so it measures shorter).
    slow = prom.query(
        f'serving_request_duration_seconds_bucket{{instance="{inst["healthy"]}", '
        'endpoint="/predict", le="0.25"}'
    )
    total = prom.query(
        f'serving_request_duration_seconds_count{{instance="{inst["healthy"]}", '
        'endpoint="/predict"}'
    )
    assert float(total[0]["value"][1]) - float(slow[0]["value"][1]) >= 8
    pushed = {
        r["metric"]["feature"]: float(r["value"][1]) for r in prom.query("monitor_feature_drift")
    }
    assert pushed == {f: float(f == SHIFTED) for f in pushed}
    assert len(pushed) == 6
    assert float(prom.query("monitor_rows")[0]["value"][1]) == 69
    # The run's own time, not the push's: an old summary pushed again does not look fresh.
    ran = datetime.fromisoformat(stack["drift"]["generated_at"].replace("Z", "+00:00"))
    pushed_at = float(prom.query("monitor_last_run_timestamp_seconds")[0]["value"][1])
    assert pushed_at == pytest.approx(ran.timestamp(), abs=1e-3)


def test_every_dashboard_panel_returns_data(stack):
    prom = stack["prometheus"]
    dashboard = json.loads((MONITORING / "grafana" / "dashboard.json").read_text())
    empty, checked = [], 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$__rate_interval", "2m")
                .replace('job=~"$job"', 'job=~"serving"')
                .replace('instance=~"$instance"', 'instance=~".*"')
            )
            assert "$" not in expr, expr
            checked += 1
            if not prom.query(expr):  # also fails on a query Prometheus refuses
                empty.append(f"{panel['title']}: {expr}")
    assert checked == 22
    assert empty == []
