"""A challenger beside the champion (Flask test client, real exported models): it must be the
champion's kind of model, and canary clients keep the champion's API."""

from __future__ import annotations

import json
import shutil

from tests.serving.conftest import metric_samples


def test_a_challenger_of_another_task_is_refused_and_said(make_app, regression_model, golden):
    app = make_app(rollout="canary", canary_percent=100.0, challenger_dir=regression_model)
    client = app.test_client()
    ready = client.get("/health/ready").get_json()
    assert ready["status"] == "ready"
    assert ready["challenger"]["status"] == "not serving"
    assert "cannot serve beside champion" in ready["challenger"]["reason"]
    # Which versions, not what differs: the challenger's inputs and classes need the token.
    assert ready["challenger"]["reason"].endswith(
        ": not the champion's kind of model (task, inputs or classes differ; the server log "
        "says which)"
    )
    assert "regression" not in ready["challenger"]["reason"]
    # Every request, canary at 100 %, is the champion's: no number from a classification API.
    response = client.post("/predict", json={"instances": [golden["rows"][0]["inputs"]]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["variant"] == "champion" and "label" in body["predictions"][0]
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    assert (
        samples[
            (
                "serving_model_reload_failures_total",
                (("step", "compatible"), ("variant", "challenger")),
            )
        ]
        == 1
    )


def test_canary_requests_the_challenger_refuses_are_answered_by_the_champion(
    make_app, exported_model, golden, tmp_path
):
    narrow = tmp_path / "narrow"
    shutil.copytree(exported_model, narrow)
    descriptor = json.loads((narrow / "model.json").read_text())
    spec = next(i for i in descriptor["inputs"] if i["name"] == "bill_length_mm")
    spec["max"] = 40.0  # the challenger's contract is narrower than the champion's
    (narrow / "model.json").write_text(json.dumps(descriptor))
    app = make_app(rollout="canary", canary_percent=100.0, challenger_dir=narrow)
    client = app.test_client()
    assert client.get("/health/ready").get_json()["challenger"]["status"] == "serving"
    row = {**golden["rows"][0]["inputs"], "bill_length_mm": 45.0}
    response = client.post("/predict", json={"instances": [row]})
    assert response.status_code == 200
    assert response.get_json()["variant"] == "champion"
    fine = client.post("/predict", json={"instances": [{**row, "bill_length_mm": 39.0}]})
    assert fine.get_json()["variant"] == "challenger"
    # What the champion refuses gets the champion's error, not the challenger's.
    bad = client.post("/predict", json={"instances": [{**row, "bill_length_mm": 90.0}]})
    assert bad.status_code == 422 and "70" in bad.get_json()["error"]["message"]
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    assert samples[("serving_canary_fallbacks_total", ())] == 1


def test_canary_requests_follow_the_champions_rules_both_ways(make_app, exported_model, golden,
                                                              tmp_path):  # fmt: skip
    """A malformed body routed to the challenger was a 500 (the body was never read into the
    fallback), and a challenger with wider rules answered what the champion's API refuses."""
    wide = tmp_path / "wide"
    shutil.copytree(exported_model, wide)
    descriptor = json.loads((wide / "model.json").read_text())
    spec = next(i for i in descriptor["inputs"] if i["name"] == "bill_length_mm")
    spec["max"] = 100.0
    (wide / "model.json").write_text(json.dumps(descriptor))
    client = make_app(rollout="canary", canary_percent=100.0, challenger_dir=wide).test_client()
    broken = client.post("/predict", data='{"instances":', content_type="application/json")
    assert broken.status_code == 400 and broken.get_json()["error"]["rule"] == "json"
    row = {**golden["rows"][0]["inputs"], "bill_length_mm": 90.0}
    refused = client.post("/predict", json={"instances": [row]})
    assert refused.status_code == 422
    assert refused.get_json()["error"]["field"] == "instances[0].bill_length_mm"
    fine = client.post("/predict", json={"instances": [{**row, "bill_length_mm": 40.0}]})
    assert fine.status_code == 200 and fine.get_json()["variant"] == "challenger"


def test_health_reasons_name_files_not_where_they_live():
    """Relative paths, and paths with spaces, commas or colons, passed through to clients
    without a token."""
    from serving.app import public_reason

    assert public_reason("model directory '../staging/challenger' does not exist") == (
        "model directory 'challenger' does not exist"
    )
    assert public_reason("'my models/chal/model.json' names 'model.onnx', not in 'my models'") == (
        "'model.json' names 'model.onnx', not in 'my models'"
    )
    assert public_reason("'/srv/a,b:c/model.json' is not JSON") == "'model.json' is not JSON"
