"""Champion and challenger in one real server process, from two real registry versions:
canary (sticky split), shadow (scored, logged, never returned), promotion under load, and
``python -m serving.compare`` on the resulting logs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from serving.app import canary_bucket
from tests.serving.conftest import is_unseen, metric_samples

pytestmark = pytest.mark.serving


@pytest.fixture
def two_versions(registry, exported_model, second_model, request):
    name = f"rollout-{request.node.name[-30:]}"
    v1 = registry.register_onnx_flavor(name, exported_model)
    v2 = registry.register_directory(name, second_model)
    registry.point(name, "champion", v1)
    registry.point(name, "challenger", v2)
    return name, v1, v2


def variants_loaded(server) -> bool:
    samples = metric_samples(requests.get(server.url + "/metrics", timeout=5).text)
    return samples.get(("serving_ready_workers", ()), 0) == 2 and any(
        name == "serving_model_info" and ("variant", "challenger") in labels and value == 2
        for (name, labels), value in samples.items()
    )


def wait_variants(server) -> None:
    from tests.serving.test_registry import wait_for

    wait_for(lambda: variants_loaded(server), "champion and challenger in both workers")


def test_canary_split_is_sticky_and_promotion_drops_nothing(
    live_server, registry, two_versions, row, tmp_path
):
    name, v1, v2 = two_versions
    log = tmp_path / "predictions.jsonl"
    server = live_server(
        SERVING_MODEL_URI=f"models:/{name}@champion",
        MLFLOW_TRACKING_URI=registry.uri,
        SERVING_RELOAD_INTERVAL="1",
        SERVING_ROLLOUT="canary",
        SERVING_CANARY_PERCENT="10",
        SERVING_PREDICTION_LOG=str(log),
        SERVING_PREDICTION_LOG_RATE_LIMIT="0",  # compare below counts every request
        SERVING_FEEDBACK_LOG=str(tmp_path / "feedback.jsonl"),
    )
    wait_variants(server)
    local = threading.local()

    def call(request_id: str, headers: dict | None = None) -> dict:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        response = session.post(
            server.url + "/predict",
            json={"instances": [row]},
            headers={"X-Request-ID": request_id, **(headers or {})},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()

    ids = [f"req-{i}" for i in range(2000)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, ids))
    challenger = [a for a in answers if a["variant"] == "challenger"]
    assert 160 <= len(challenger) <= 240, len(challenger)  # 8-12% of 2,000
    for request_id, answer in zip(ids, answers, strict=True):
        expected = "challenger" if canary_bucket(request_id) < 1000 else "champion"
        assert answer["variant"] == expected
        assert answer["model"]["version"] == (v2 if expected == "challenger" else v1)
    # Sticky: the same request id, or the same caller key, always gets the same variant.
    for request_id in ids[:50]:
        assert {call(request_id)["variant"] for _ in range(3)} == {
            answers[ids.index(request_id)]["variant"]
        }
    keyed = {call(f"other-{i}", {"X-Rollout-Key": "customer-7"})["variant"] for i in range(20)}
    assert len(keyed) == 1

    # Promotion under load: the champion alias moves to v2 while requests keep coming.
    stop, results = threading.Event(), []

    def hammer():
        i = 0
        while not stop.is_set():
            try:
                answer = call(f"load-{threading.get_ident()}-{i}")
                results.append((answer["variant"], answer["model"]["version"]))
            except AssertionError as exc:
                results.append(("failed", str(exc)))
            except requests.RequestException as exc:
                results.append(("failed", repr(exc)))
            i += 1

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    from tests.serving.test_registry import wait_for

    wait_for(lambda: len(results) > 50, "requests before the promotion")
    registry.point(name, "champion", v2)
    wait_for(
        lambda: any(v == "champion" and ver == v2 for v, ver in results[-20:]),
        "champion answers from v2",
    )
    seen = len(results)
    wait_for(lambda: len(results) > seen + 50, "requests after the promotion")
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not [r for r in results if r[0] == "failed"], results[:5]

    # Feedback for some served rows, then make compare's report from the real logs.
    feedback = [{"request_id": i, "actual": "Gentoo"} for i in ids[:400]]
    response = requests.post(server.url + "/feedback", json={"items": feedback}, timeout=30)
    assert response.status_code == 202
    assert server.stop() == 0
    report = json.loads(
        subprocess.run(
            [sys.executable, "-m", "serving.compare", "--log", str(log),
             "--feedback", str(tmp_path / "feedback.jsonl"), "--json"],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    assert report["challenger"]["requests"] >= len(challenger)
    assert set(report["champion"]["versions"]) == {v1, v2}
    assert report["paired_rows"] == 0 and report["agreement"] is None  # canary: no pairs
    assert report["difference"]["method"] == "independent"
    lo, hi = report["difference"]["ci95"]
    assert lo <= report["difference"]["challenger_minus_champion"] <= hi


def test_shadow_scores_logs_and_never_returns_the_challenger(
    live_server, registry, two_versions, golden, tmp_path
):
    name, v1, v2 = two_versions
    log = tmp_path / "predictions.jsonl"
    server = live_server(
        SERVING_MODEL_URI=f"models:/{name}@champion",
        MLFLOW_TRACKING_URI=registry.uri,
        SERVING_ROLLOUT="shadow",
        SERVING_PREDICTION_LOG=str(log),
        SERVING_PREDICTION_LOG_RATE_LIMIT="0",  # every row: the records are counted below
    )
    wait_variants(server)
    known = [r for r in golden["rows"] if not is_unseen(r)]
    rows = [r["inputs"] for r in known]
    answers = []
    with requests.Session() as session:
        for i in range(60):
            response = session.post(
                server.url + "/predict",
                json={"instances": rows},
                headers={"X-Request-ID": f"shadow-{i}"},
                timeout=30,
            )
            assert response.status_code == 200
            answers.append(response.json())
    assert {(a["variant"], a["model"]["version"]) for a in answers} == {("champion", v1)}
    golden_labels = [r["label"] for r in known]
    assert all([p["label"] for p in a["predictions"]] == golden_labels for a in answers)
    assert server.stop() == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    served = [r for r in records if r["served"]]
    shadow = [r for r in records if not r["served"]]
    assert {(r["variant"], r["model"]["version"]) for r in served} == {("champion", v1)}
    assert {(r["variant"], r["model"]["version"]) for r in shadow} == {("challenger", v2)}
    assert len(served) == len(shadow) == 60 * len(rows)
    result = subprocess.run(
        [sys.executable, "-m", "serving.compare", "--log", str(log)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert f"Agreement on {60 * len(rows)} rows both scored:" in result.stdout


def test_a_directory_champion_with_a_registry_challenger_leaves_mlflow_to_the_launcher(
    live_server, registry, two_versions, exported_model, tmp_path
):
    """The launcher publishes the challenger for the workers, as it does a registry champion;
    each worker used to run its own registry watcher (and import MLflow)."""
    name, _, v2 = two_versions
    runtime = tmp_path / "runtime"
    server = live_server(
        SERVING_MODEL_DIR=str(exported_model),
        SERVING_RUNTIME_DIR=str(runtime),
        MLFLOW_TRACKING_URI=registry.uri,
        SERVING_ROLLOUT="canary",
        SERVING_CANARY_PERCENT="100",
        SERVING_CHALLENGER_URI=f"models:/{name}@challenger",
    )
    wait_variants(server)
    published = json.loads((runtime / "challenger-current.json").read_text())
    assert published["version"] == v2
    ready = requests.get(server.url + "/health/ready", timeout=5).json()
    assert ready["challenger"]["status"] == "serving"
    assert ready["challenger"]["model"]["version"] == v2


def test_a_rollout_key_that_is_not_ascii_is_refused_by_name(live_server, exported_model, row):
    """granian cannot hand over a header value that is not ASCII; the canary read it as absent
    and bucketed by a random request id, moving the caller between variants."""
    import http.client

    server = live_server(
        SERVING_MODEL_DIR=str(exported_model),
        SERVING_ROLLOUT="canary",
        SERVING_CHALLENGER_DIR=str(exported_model),
    )
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/predict", json.dumps({"instances": [row]}),
                 {"Content-Type": "application/json", "X-Rollout-Key": "héllo"})  # fmt: skip
    response = conn.getresponse()
    error = json.loads(response.read())["error"]
    assert response.status == 400
    assert (error["rule"], error["field"]) == ("header", "X-Rollout-Key")
    conn.close()
