"""A regression model (descriptor v2, ``task: regression``): responses, metadata, OpenAPI,
metrics and the prediction log follow the task; requests use the original column names."""

from __future__ import annotations

import json

import pytest

from tests.serving.conftest import REGRESSION_NAME, expected_value, metric_samples

ROW = {"bill length (mm)": 42.0, "flipper_length_mm": 201.0, "island": "Dream"}


@pytest.fixture
def regression(make_app, regression_model, tmp_path):
    return make_app(model_dir=regression_model, prediction_log=tmp_path / "predictions.jsonl")


def test_predictions_are_numbers_keyed_by_original_column_names(regression):
    client = regression.test_client()
    rows = [ROW, {**ROW, "island": "Biscoe", "bill length (mm)": 60.0}]
    response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["predictions"] == pytest.approx([expected_value(r) for r in rows], rel=1e-6)
    assert body["model"]["name"] == REGRESSION_NAME
    # The ONNX input name is not a request column.
    renamed = {**ROW, "bill_length__mm_": ROW["bill length (mm)"]}
    del renamed["bill length (mm)"]
    error = client.post("/predict", json={"instances": [renamed]}).get_json()["error"]
    assert (error["rule"], error["field"]) == ("required", "instances[0].bill length (mm)")


def test_metadata_openapi_and_metrics_follow_the_task(regression):
    client = regression.test_client()
    meta = client.get("/metadata").get_json()
    assert meta["task"] == "regression" and meta["classes"] == []
    assert [i["onnx_name"] for i in meta["inputs"]][0] == "bill_length__mm_"
    doc = client.get("/openapi.json").get_json()
    items = doc["components"]["schemas"]["Predictions"]["properties"]["predictions"]["items"]
    assert items == {"type": "number"}
    assert "bill length (mm)" in json.dumps(doc)
    for _ in range(3):
        client.post("/predict", json={"instances": [ROW]})
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    value = expected_value(ROW)  # 344.5: between the 250 and 500 bounds

    def bucket(le: str) -> float:
        return samples[("serving_prediction_value_bucket", (("le", le), ("variant", "champion")))]

    assert (bucket("+Inf"), bucket("500.0"), bucket("250.0")) == (3.0, 3.0, 0.0), value
    assert not any(name == "serving_predictions_total" and labels for name, labels in samples)


def test_prediction_log_records_the_value(regression, tmp_path):
    client = regression.test_client()
    response = client.post("/predict", json={"instances": [ROW]}, headers={"X-Request-ID": "r-1"})
    assert response.status_code == 200
    regression.extensions["serving"].prediction_log.writer.flush()
    (line,) = (tmp_path / "predictions.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["request_id"] == "r-1" and record["row"] == 0
    assert record["inputs"] == ROW
    assert record["output"] == {"value": pytest.approx(expected_value(ROW), rel=1e-6)}


def test_an_input_that_overflows_the_graph_gets_a_422_not_a_null_value(make_app, regression_model):
    """Under SERVING_OUT_OF_RANGE=accept, 1e308 overflows the graph's float32: the answer was
    a null value (a label with null probabilities for a classifier), logged as such."""
    client = make_app(model_dir=regression_model, out_of_range="accept").test_client()
    rows = [ROW, {**ROW, "bill length (mm)": 1e308}]
    response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["rule"] == "model_output"
    assert error["message"].startswith("the model's output for row 1 is not a number")
    assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
