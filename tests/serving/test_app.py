"""The app through Flask's test client: every endpoint, every bad input, auth, formats."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.serving.conftest import (
    FEATURES,
    MODEL_NAME,
    RUN_ID,
    is_unseen,
    metric_samples,
    tamper_golden,
)

ALLOWED_ISLANDS = "Biscoe, Dream, Torgersen"


def predict(client, body, headers=None, **kwargs):
    if isinstance(body, (dict, list)):
        kwargs["json"] = body
    else:
        kwargs.setdefault("content_type", "application/json")
        kwargs["data"] = body
    return client.post("/predict", headers=headers or {}, **kwargs)


def error_of(response, status: int, rule: str, field: str | None = None) -> str:
    """Assert the status and the JSON error shape; return the message."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["status"] == status
    assert error["rule"] == rule
    if field is not None:
        assert error["field"] == field
    return error["message"]


# ---------------------------------------------------------------------- predict


def test_predict_reproduces_every_known_golden_row(client, golden):
    rows = [r for r in golden["rows"] if not is_unseen(r)]
    response = predict(client, {"instances": [r["inputs"] for r in rows]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"]["name"] == MODEL_NAME
    assert body["model"]["version"].startswith("sha256:")
    classes = ["Adelie", "Chinstrap", "Gentoo"]
    assert len(body["predictions"]) == len(rows)
    for expected, got in zip(rows, body["predictions"], strict=True):
        assert got["label"] == expected["label"]
        assert list(got["probabilities"]) == classes
        for value, want in zip(
            got["probabilities"].values(), expected["probabilities"], strict=True
        ):
            assert value == pytest.approx(want, abs=golden["tolerance"])


def test_predict_one_row_returns_label_probabilities_and_version(client, row, golden_row):
    response = predict(client, {"instances": [row]})
    assert response.status_code == 200
    (prediction,) = response.get_json()["predictions"]
    assert prediction["label"] == golden_row["label"]
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_null_means_missing_where_nullable(client, row):
    as_null = predict(client, {"instances": [{**row, "sex": None, "body_mass_g": None}]})
    as_empty = predict(client, {"instances": [{**row, "sex": "", "body_mass_g": None}]})
    assert as_null.status_code == as_empty.status_code == 200
    assert as_null.get_json()["predictions"] == as_empty.get_json()["predictions"]
    assert (
        as_null.get_json()["predictions"]
        != predict(client, {"instances": [row]}).get_json()["predictions"]
    )


def test_integers_are_numbers(client, row):
    whole = int(row["body_mass_g"])
    assert whole == row["body_mass_g"]  # penguins weigh whole grams
    response = predict(client, {"instances": [{**row, "body_mass_g": whole}]})
    assert response.status_code == 200
    expected = predict(client, {"instances": [row]}).get_json()
    assert response.get_json()["predictions"] == expected["predictions"]


def test_mlflow_dataframe_records_and_split_match_instances(client, golden):
    rows = [r["inputs"] for r in golden["rows"][:4]]
    ours = predict(client, {"instances": rows}).get_json()
    records = predict(client, {"dataframe_records": rows}).get_json()
    columns = list(reversed(FEATURES))  # any column order
    split = predict(
        client,
        {
            "dataframe_split": {
                "index": list(range(len(rows))),
                "columns": columns,
                "data": [[r[c] for c in columns] for r in rows],
            }
        },
    ).get_json()
    assert ours["predictions"] == records["predictions"] == split["predictions"]
    assert ours["request_id"] != records["request_id"]  # each request gets its own id


def test_content_type_with_charset_is_accepted(client, row):
    response = predict(
        client, json.dumps({"instances": [row]}), content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 200


def test_large_batch_takes_the_vectorised_path_with_the_same_answers(client, golden):
    rows = [r["inputs"] for r in golden["rows"] if not is_unseen(r)]
    batch = (rows * 20)[:100]
    body = predict(client, {"instances": batch}).get_json()
    assert len(body["predictions"]) == 100
    single = [predict(client, {"instances": [r]}).get_json()["predictions"][0] for r in rows]
    for got, want in zip(body["predictions"], single * 20, strict=False):
        assert got["label"] == want["label"]
        # float32 kernels may round differently for a batch than for one row
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)


# ---------------------------------------------------------------------- bad input


def test_malformed_json_is_400_without_echo(client):
    response = predict(client, '{"instances": [{"island": "hunter2-secret"')
    message = error_of(response, 400, "json")
    assert message.startswith("the body is not valid JSON: unexpected end of data")
    assert "hunter2" not in response.get_data(as_text=True)


def test_compressed_or_non_utf8_body_is_named(client, row):
    # A gzip body was read as JSON text: 400 "str is not valid UTF-8: surrogates not allowed".
    import gzip

    body = json.dumps({"instances": [row]}).encode()
    for coding in ("gzip", "br, gzip", "deflate"):
        response = client.post(
            "/predict",
            data=gzip.compress(body),
            content_type="application/json",
            headers={"Content-Encoding": coding},
        )
        message = error_of(response, 415, "content_encoding", "Content-Encoding")
        assert message == "Content-Encoding must be identity: send the JSON uncompressed"
    ok = client.post("/predict", data=body, content_type="application/json",
                     headers={"Content-Encoding": "Identity"})  # fmt: skip
    assert ok.status_code == 200
    for raw in (gzip.compress(body), body.replace(b'"instances"', b'"inst\xe9nces"')):
        message = error_of(predict(client, raw), 400, "json")
        assert message == "the body is not valid JSON: it is not UTF-8 text"
    # JSON is UTF-8: UTF-16 and UTF-32 were accepted (json.loads guessed them); a BOM is fine.
    for raw in (body.decode().encode("utf-16"), body.decode().encode("utf-32")):
        assert error_of(predict(client, raw), 400, "json").endswith("it is not UTF-8 text")
    error_of(predict(client, body.decode().encode("utf-16-le")), 400, "json")
    assert predict(client, b"\xef\xbb\xbf" + body).status_code == 200


def test_empty_body_is_400(client):
    message = error_of(predict(client, ""), 400, "json")
    assert "empty document" in message


@pytest.mark.parametrize(
    ("content_type", "data"),
    [("text/plain", "{}"), ("application/x-www-form-urlencoded", "a=b"), (None, "{}")],
)
def test_wrong_content_type_is_415(client, content_type, data):
    kwargs = {"data": data}
    if content_type:
        kwargs["content_type"] = content_type
    response = client.post("/predict", **kwargs)
    message = error_of(response, 415, "content_type", "Content-Type")
    assert message == "Content-Type must be application/json"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ([1, 2], None, "exactly one of the keys instances, dataframe_records, dataframe_split"),
        ({"rows": []}, None, "unknown key 'rows'"),
        ({"instances": [], "dataframe_records": []}, None, "exactly one of the keys"),
        ({"instances": {"island": "Dream"}}, "instances", "must be an array of row objects"),
        ({"dataframe_split": [1]}, "dataframe_split", 'must be an object with "columns"'),
        ({"dataframe_split": {"columns": [1], "data": []}}, "dataframe_split.columns", "names"),
    ],
)
def test_body_in_no_accepted_format_is_400(client, body, field, message):
    response = predict(client, body)
    assert message in error_of(response, 400, "format", field)


def test_missing_column_is_422_naming_it(client, row):
    del row["bill_depth_mm"]
    response = predict(client, {"instances": [dict(row)] * 2 + [row]})
    message = error_of(response, 422, "required", "instances[0].bill_depth_mm")
    assert message == (
        "column 'bill_depth_mm' is missing; every row needs: island, bill_length_mm, "
        "bill_depth_mm, flipper_length_mm, body_mass_g, sex"
    )


def test_unknown_column_is_422_naming_it(client, row):
    response = predict(client, {"instances": [row, {**row, "year": 2008}]})
    message = error_of(response, 422, "unknown_column", "instances[1].year")
    assert message.startswith("column 'year' is not a model input; the inputs are: island,")


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("bill_length_mm", "39.1", "must be a number, got a string"),
        ("bill_length_mm", True, "must be a number, got a boolean"),
        ("bill_length_mm", [39.1], "must be a number, got an array"),
        ("island", 3, "must be a string, got an integer"),
        ("sex", {"v": "male"}, "must be a string, got an object"),
    ],
)
def test_wrong_type_is_422(client, row, column, value, message):
    response = predict(client, {"dataframe_records": [row, {**row, column: value}]})
    assert error_of(response, 422, "type", f"dataframe_records[1].{column}") == message


def test_row_that_is_not_an_object_is_422(client, row):
    response = predict(client, {"instances": [row, [1, 2]]})
    message = error_of(response, 422, "type", "instances[1]")
    assert message.endswith("got an array")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_number_is_422_naming_the_field(client, row, literal):
    body = json.dumps({"instances": [{**row, "body_mass_g": 4321.5}]}).replace("4321.5", literal)
    response = predict(client, body)
    assert error_of(response, 422, "finite", "instances[0].body_mass_g") == (
        "must be a finite number"
    )


def test_out_of_range_number_is_422_naming_the_range(client, row):
    response = predict(client, {"instances": [{**row, "body_mass_g": 65000.0}]})
    message = error_of(response, 422, "range", "instances[0].body_mass_g")
    assert message == "must be within [2500.0, 6500.0]"


def test_out_of_range_accepted_when_configured(make_app, row):
    client = make_app(out_of_range="accept").test_client()
    assert predict(client, {"instances": [{**row, "body_mass_g": 65000.0}]}).status_code == 200


def test_null_where_not_nullable_is_422(client, row):
    response = predict(client, {"instances": [{**row, "island": None}]})
    assert error_of(response, 422, "not_null", "instances[0].island") == (
        "must not be null or empty"
    )


def test_unknown_category_is_422_naming_the_allowed_values_without_echo(client, row):
    response = predict(client, {"instances": [{**row, "island": "Secret Island 42"}]})
    message = error_of(response, 422, "category", "instances[0].island")
    assert message == f"must be one of: {ALLOWED_ISLANDS}"
    assert "Secret" not in response.get_data(as_text=True)


def test_unknown_category_accepted_when_configured_reproduces_golden(make_app, golden):
    client = make_app(unknown_categories="accept").test_client()
    (unseen,) = [r for r in golden["rows"] if is_unseen(r)]
    response = predict(client, {"instances": [unseen["inputs"]]})
    assert response.status_code == 200
    (prediction,) = response.get_json()["predictions"]
    assert prediction["label"] == unseen["label"]
    assert list(prediction["probabilities"].values()) == pytest.approx(
        unseen["probabilities"], abs=golden["tolerance"]
    )


def test_empty_batch_is_422(client):
    for key in ("instances", "dataframe_records"):
        message = error_of(predict(client, {key: []}), 422, "min_rows", key)
        assert message == "the batch is empty: send at least one row"
    response = predict(client, {"dataframe_split": {"columns": FEATURES, "data": []}})
    error_of(response, 422, "min_rows", "dataframe_split.data")


def test_too_many_rows_is_413(make_app, row):
    client = make_app(max_rows=5).test_client()
    assert predict(client, {"instances": [row] * 5}).status_code == 200
    message = error_of(predict(client, {"instances": [row] * 6}), 413, "max_rows", "instances")
    assert message == "the batch has 6 rows; at most 5 are accepted per request"


def test_body_too_large_is_413(make_app, row):
    client = make_app(max_body_bytes=1000).test_client()
    body = json.dumps({"instances": [row] * 10})
    message = error_of(predict(client, body), 413, "max_body_bytes")
    assert message == f"the body is {len(body)} bytes; the limit is 1000"


def test_chunked_body_too_large_is_413(make_app, row):
    import io

    client = make_app(max_body_bytes=1000).test_client()
    body = json.dumps({"instances": [row] * 10}).encode()
    response = client.post(
        "/predict",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    assert error_of(response, 413, "max_body_bytes") == "the body exceeds 1000 bytes"


@pytest.mark.parametrize("length", ["-5", "ten"])
def test_invalid_content_length_is_400(client, length):
    response = client.post(
        "/predict",
        data=b"{}",
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": length},
    )
    assert error_of(response, 400, "content_length", "Content-Length") == "invalid Content-Length"


def test_split_rows_must_match_columns(client, row):
    body = {"dataframe_split": {"columns": FEATURES, "data": [[row[c] for c in FEATURES][:-1]]}}
    message = error_of(predict(client, body), 422, "row_shape", "dataframe_split.data[0]")
    assert (
        message == 'each row must be an array of 6 values in the order of "columns", got 5 values'
    )


def test_split_missing_and_duplicate_columns_are_422(client, row):
    columns = FEATURES[:-1]
    body = {"dataframe_split": {"columns": columns, "data": [[row[c] for c in columns]]}}
    message = error_of(predict(client, body), 422, "required", "dataframe_split.columns")
    assert message.startswith("column 'sex' is missing")
    columns = [*FEATURES, "island"]
    body = {"dataframe_split": {"columns": columns, "data": [[row[c] for c in columns]]}}
    error_of(predict(client, body), 422, "duplicate_column", "dataframe_split.columns")


def test_client_errors_never_500(client, row):
    bodies = [
        b"\xff\xfe\x00",
        b'{"instances": [{"island": "\\ud800"}]}',
        b"[" * 5000,
        json.dumps({"instances": [{**row, "island": "\ud83d\udc27"}]}).encode(),
        json.dumps({"instances": [{**row, "bill_length_mm": 10**40}]}).encode(),
        json.dumps({"instances": [None]}).encode(),
        b"null",
        b'"instances"',
    ]
    for body in bodies:
        response = client.post("/predict", data=body, content_type="application/json")
        assert 400 <= response.status_code < 500, (body[:40], response.get_data(as_text=True))
        assert "error" in response.get_json()


def test_unknown_path_and_wrong_method_are_json(client):
    response = client.get("/nope")
    assert error_of(response, 404, "not_found").startswith("The requested URL was not found")
    response = client.get("/predict")
    error_of(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_options_is_204_with_allow_and_no_html(client):
    # Flask's automatic answer was an empty 200 text/html on every route.
    for path, allow in (
        ("/predict", {"OPTIONS", "POST"}),
        ("/feedback", {"OPTIONS", "POST"}),
        ("/metadata", {"GET", "HEAD", "OPTIONS"}),
        ("/health/live", {"GET", "HEAD", "OPTIONS"}),
        ("/metrics", {"GET", "HEAD", "OPTIONS"}),
    ):
        response = client.options(path)
        assert response.status_code == 204, path
        assert set(response.headers["Allow"].split(", ")) == allow
        assert "Content-Type" not in response.headers and response.data == b""
    error_of(client.options("/nope"), 404, "not_found")
    # Flask's default /static/<path> route is gone: nothing here serves files.
    error_of(client.get("/static/app.py"), 404, "not_found")
    error_of(client.post("/static/x"), 404, "not_found")


# ---------------------------------------------------------------------- auth


@pytest.fixture
def secured(make_app):
    return make_app(api_token="correct horse battery staple").test_client()


def test_auth_missing_header_is_401(secured, row):
    response = predict(secured, {"instances": [row]})
    assert error_of(response, 401, "auth", "Authorization") == "missing bearer token"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="serving"'


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong",
        "Bearer correct horse battery stapl",
        "Basic Y29ycmVjdA==",
        "correct horse battery staple",
        "Bearer corréct horse battery staple",
    ],
)
def test_auth_wrong_token_is_401(secured, row, header):
    response = predict(secured, {"instances": [row]}, headers={"Authorization": header})
    assert error_of(response, 401, "auth", "Authorization") == "invalid bearer token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_auth_right_token_is_200(secured, row):
    headers = {"Authorization": "Bearer correct horse battery staple"}
    assert predict(secured, {"instances": [row]}, headers=headers).status_code == 200
    assert secured.get("/metadata", headers=headers).status_code == 200


def test_a_token_the_edge_checked_is_not_compared_again_and_no_header_can_say_so(secured, row):
    """serving.rsgi checks a protected POST's token before reading its body and marks the
    request; the view then trusts the mark. Only the edge can set it: not a client's header."""
    from serving.auth import AUTHORIZED

    marked = predict(secured, {"instances": [row]}, environ_overrides={AUTHORIZED: True})
    assert marked.status_code == 200
    forged = {"Serving-Authorized": "1", "Serving.Authorized": "true"}
    response = predict(secured, {"instances": [row]}, headers=forged)
    assert error_of(response, 401, "auth", "Authorization") == "missing bearer token"


def test_auth_checked_before_the_body(secured):
    response = predict(secured, "not json")
    error_of(response, 401, "auth")


def test_auth_protects_metadata_but_not_probes_metrics_or_openapi(secured):
    error_of(secured.get("/metadata"), 401, "auth")
    for path in ("/health/live", "/health/ready", "/metrics", "/openapi.json"):
        assert secured.get(path).status_code == 200, path


def test_auth_off_without_token(client, row):
    assert (
        predict(client, {"instances": [row]}, headers={"Authorization": "Bearer x"}).status_code
        == 200
    )


def test_token_file(tmp_path, exported_model, row):
    from serving.app import create_app
    from serving.config import ServingConfig

    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    config = ServingConfig.from_env(
        {
            "SERVING_API_TOKEN_FILE": str(token_file),
            "SERVING_MODEL_DIR": str(exported_model),
            "SERVING_RUNTIME_DIR": str(tmp_path / "rt"),
        }
    )
    client = create_app(config).test_client()
    assert predict(client, {"instances": [row]}).status_code == 401
    ok = predict(client, {"instances": [row]}, headers={"Authorization": "Bearer from-a-file"})
    assert ok.status_code == 200


# ---------------------------------------------------------------------- health, metadata, openapi


def test_health_live_and_ready(client, golden):
    assert client.get("/health/live").get_json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ready"
    assert body["model"]["name"] == MODEL_NAME
    assert body["golden_rows"] == len(golden["rows"])


def test_not_ready_when_golden_examples_do_not_reproduce(make_app, exported_model, tmp_path, row):
    broken = tamper_golden(exported_model, tmp_path / "broken")
    client = make_app(model_dir=broken).test_client()
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "not ready"
    assert ready.get_json()["reason"].startswith("golden row 1: probabilities differ by")
    message = error_of(predict(client, {"instances": [row]}), 503, "model_not_loaded")
    assert "golden row 1" in message
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    assert (
        samples[
            ("serving_model_reload_failures_total", (("step", "golden"), ("variant", "champion")))
        ]
        == 1.0
    )
    assert samples[("serving_ready_workers", ())] == 0.0


def test_not_ready_when_the_model_directory_is_missing(make_app, tmp_path):
    client = make_app(model_dir=tmp_path / "nowhere").test_client()
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    # Defect 9: the probe needs no token, so it names the problem, never a server path.
    assert ready.get_json()["reason"] == "model directory 'nowhere' does not exist"
    assert str(tmp_path) not in ready.get_data(as_text=True)


def test_not_ready_reason_never_shows_paths(make_app, exported_model, tmp_path):
    broken = tmp_path / "deep" / "broken"
    broken.parent.mkdir()
    import shutil

    shutil.copytree(exported_model, broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    client = make_app(model_dir=broken).test_client()
    text = client.get("/health/ready").get_data(as_text=True)
    assert json.loads(text)["reason"].startswith("ONNX Runtime cannot load 'model.onnx'")
    assert str(tmp_path) not in text and "/deep/" not in text


def test_metadata(client, golden):
    body = client.get("/metadata").get_json()
    assert body["name"] == MODEL_NAME
    assert body["source"] == "directory"
    assert body["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert [i["name"] for i in body["inputs"]] == FEATURES
    assert body["inputs"][0]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert body["lineage"]["run_id"] == RUN_ID
    assert body["golden_rows"] == len(golden["rows"])


def test_model_version_from_config(make_app):
    client = make_app(model_version="7").test_client()
    assert client.get("/metadata").get_json()["version"] == "7"


def test_openapi_is_generated_from_the_descriptor(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == f"{MODEL_NAME} prediction service"
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    formats = body["schema"]["oneOf"]
    assert [f["required"] for f in formats] == [
        ["instances"],
        ["dataframe_records"],
        ["dataframe_split"],
        ["inputs"],
    ]
    rows = formats[0]["properties"]["instances"]
    assert rows["maxItems"] == 1000 and rows["minItems"] == 1
    item = rows["items"]
    assert item["required"] == FEATURES
    assert item["additionalProperties"] is False
    assert item["properties"]["island"] == {
        "type": "string",
        "enum": ["Biscoe", "Dream", "Torgersen"],
    }
    assert item["properties"]["sex"] == {
        "type": ["string", "null"],
        "enum": ["female", "male", None, ""],
    }
    assert item["properties"]["body_mass_g"] == {
        "type": ["number", "null"],
        "minimum": 2500.0,
        "maximum": 6500.0,
    }
    responses = doc["paths"]["/predict"]["post"]["responses"]
    assert set(responses) == {"200", "400", "413", "415", "422", "503"}  # no 401 without auth
    label = doc["components"]["schemas"]["Predictions"]["properties"]["predictions"]["items"]
    assert label["properties"]["label"]["enum"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert "securitySchemes" not in doc["components"]


def test_openapi_declares_bearer_auth_when_on(secured):
    doc = secured.get("/openapi.json").get_json()
    assert doc["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"}
    }
    assert doc["paths"]["/predict"]["post"]["security"] == [{"bearerAuth": []}]
    assert "401" in doc["paths"]["/predict"]["post"]["responses"]


def test_openapi_under_accept_policies_drops_enum_and_range(make_app):
    doc = make_app(unknown_categories="accept", out_of_range="accept").test_client()
    item = doc.get("/openapi.json").get_json()["paths"]["/predict"]["post"]["requestBody"][
        "content"
    ]["application/json"]["schema"]["oneOf"][0]["properties"]["instances"]["items"]
    assert item["properties"]["island"] == {
        "type": "string",
        "minLength": 1,
        "description": "known categories: Biscoe, Dream, Torgersen; others are accepted and "
        "encoded as all zeros",
    }
    # Only finiteness is left: the bounds are float64's, so 1e309 (inf) is still refused.
    assert item["properties"]["body_mass_g"] == {
        "type": ["number", "null"],
        "minimum": -1.7976931348623157e308,
        "maximum": 1.7976931348623157e308,
        "description": "any finite number; expected range [2500.0, 6500.0]",
    }


# ---------------------------------------------------------------------- metrics


def test_metrics_count_requests_latency_classes_and_version(client, golden, row, golden_row):
    rows = [r["inputs"] for r in golden["rows"][:3]]
    expected = Counter([r["label"] for r in golden["rows"][:3]] + [golden_row["label"]])
    assert predict(client, {"instances": rows}).status_code == 200
    assert predict(client, {"instances": [row]}).status_code == 200
    assert predict(client, {"instances": []}).status_code == 422
    client.get("/nope")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = metric_samples(response.get_data(as_text=True))
    req = "serving_requests_total"
    assert samples[(req, (("endpoint", "/predict"), ("status", "200")))] == 2.0
    assert samples[(req, (("endpoint", "/predict"), ("status", "422")))] == 1.0
    assert samples[(req, (("endpoint", "other"), ("status", "404")))] == 1.0
    for name in ("Adelie", "Chinstrap", "Gentoo"):
        key = ("serving_predictions_total", (("class", name), ("variant", "champion")))
        assert samples[key] == expected[name]
    latency = "serving_request_duration_seconds"
    assert samples[(latency + "_count", (("endpoint", "/predict"),))] == 3.0
    assert samples[(latency + "_bucket", (("endpoint", "/predict"), ("le", "+Inf")))] == 3.0
    assert samples[(latency + "_sum", (("endpoint", "/predict"),))] > 0.0
    version = client.get("/metadata").get_json()["version"]
    info = (
        ("name", MODEL_NAME),
        ("source", "directory"),
        ("variant", "champion"),
        ("version", version),
    )
    assert samples[("serving_model_info", info)] == 1.0
    assert samples[("serving_ready_workers", ())] == 1.0
    assert (
        samples[
            ("serving_model_reload_failures_total", (("step", "load"), ("variant", "champion")))
        ]
        == 0.0
    )
    assert samples[("serving_model_reloads_total", (("variant", "champion"),))] == 0.0


# ---------------------------------------------------------------------- defects of issue 10


@pytest.mark.parametrize("bad", [{"a": 1}, ["Biscoe"]])
@pytest.mark.parametrize("key", ["instances", "dataframe_records", "dataframe_split"])
def test_object_or_array_in_a_category_of_a_big_batch_is_422(client, row, bad, key):
    """Defect 2: the vectorised path (more than 8 rows) hashed the values: a 500."""
    rows = [dict(row) for _ in range(12)]
    rows[10]["island"] = bad
    if key == "dataframe_split":
        body = {key: {"columns": FEATURES, "data": [[r[c] for c in FEATURES] for r in rows]}}
        field = "dataframe_split.data[10].island"
    else:
        body, field = {key: rows}, f"{key}[10].island"
    message = error_of(predict(client, body), 422, "type", field)
    got = "an object" if isinstance(bad, dict) else "an array"
    assert message == f"must be a string, got {got}"


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_auth_scheme_is_case_insensitive(secured, row, scheme):
    """Defect 7: RFC 9110 section 11.1."""
    headers = {"Authorization": f"{scheme} correct horse battery staple"}
    assert predict(secured, {"instances": [row]}, headers=headers).status_code == 200
    wrong = {"Authorization": f"{scheme} correct horse battery stapLe"}
    assert error_of(predict(secured, {"instances": [row]}, headers=wrong), 401, "auth")
    basic = {"Authorization": "Basic correct horse battery staple"}
    assert error_of(predict(secured, {"instances": [row]}, headers=basic), 401, "auth")


@pytest.mark.parametrize("digits", [19, 400, 5000])
def test_huge_integer_is_422_naming_the_field(client, row, digits):
    """Defect 11: a 400-digit integer was a 400 with no field."""
    body = json.dumps({"instances": [row]}).replace(json.dumps(row["body_mass_g"]), "9" * digits, 1)
    response = predict(client, body)
    if digits == 19:  # a big but finite number: outside the descriptor's range
        assert error_of(response, 422, "range", "instances[0].body_mass_g")
    else:
        message = error_of(response, 422, "finite", "instances[0].body_mass_g")
        assert message == "must be a finite number"


def test_mlflow_inputs_and_params_are_accepted(client, golden):
    """Defect 12: MLflow's ``inputs`` (records or columns) and a ``params`` object."""
    rows = [r["inputs"] for r in golden["rows"][:4]]
    ours = predict(client, {"instances": rows}).get_json()["predictions"]
    as_records = predict(client, {"inputs": rows})
    as_columns = predict(client, {"inputs": {c: [r[c] for r in rows] for c in FEATURES}})
    with_params = predict(
        client,
        {"dataframe_split": {"columns": FEATURES, "data": [[r[c] for c in FEATURES] for r in rows]},
         "params": {"threshold": 0.5}},
    )  # fmt: skip
    for response in (as_records, as_columns, with_params):
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["predictions"] == ours
    uneven = {c: [r[c] for r in rows] for c in FEATURES}
    uneven["sex"] = uneven["sex"][:2]
    assert error_of(predict(client, {"inputs": uneven}), 422, "row_shape", "inputs")
    bad_value = {c: [r[c] for r in rows] for c in FEATURES}
    bad_value["island"][2] = "Atlantis"
    assert error_of(predict(client, {"inputs": bad_value}), 422, "category", "inputs[2].island")
    assert (
        error_of(predict(client, {"instances": rows, "params": [1]}), 400, "format", "params")
        == "must be an object"
    )


def test_host_allow_list(make_app, row):
    app = make_app(allowed_hosts=("model.example.org", "127.0.0.1"))
    client = app.test_client()
    ok = predict(client, {"instances": [row]}, headers={"Host": "model.example.org:8000"})
    assert ok.status_code == 200
    assert client.get("/health/live", headers={"Host": "127.0.0.1"}).status_code == 200
    rebound = client.get("/metadata", headers={"Host": "attacker.example.com"})
    assert (
        error_of(rebound, 421, "host", "Host") == "this server does not answer for that host name"
    )
    samples = metric_samples(
        client.get("/metrics", headers={"Host": "127.0.0.1"}).get_data(as_text=True)
    )
    assert samples[("serving_requests_total", (("endpoint", "/metadata"), ("status", "421")))] == 1


def test_host_allow_list_compares_bare_names(make_app):
    # "[::1]" was allowed only without a port, and the absolute form "name." was refused.
    client = make_app(allowed_hosts=("[::1]", "Model.Example.org")).test_client()
    for host in ("[::1]", "[::1]:8000", "model.example.org.", "MODEL.example.org.:8000"):
        assert client.get("/health/live", headers={"Host": host}).status_code == 200, host
    for host in ("[::2]:8000", "model.example.org.evil.example", "evil.example"):
        error_of(client.get("/health/live", headers={"Host": host}), 421, "host", "Host")
    # Not a host at all: 400 (RFC 9112 section 3.2); "localhost:abc" was read as "localhost".
    for host in ("::1]", "[model.example.org]", "model.example.org:abc", "a b", ""):
        assert (
            error_of(client.get("/health/live", headers={"Host": host}), 400, "host", "Host")
            == "the Host header is not a host name with an optional port"
        ), host


def test_host_allow_list_from_the_environment():
    from serving.config import ServingConfig

    config = ServingConfig.from_env({"SERVING_ALLOWED_HOSTS": " a.example , b.example,"})
    assert config.allowed_hosts == ("a.example", "b.example")
    from serving.config import ConfigError

    with pytest.raises(ConfigError, match="'a.example:http' is not a host name"):
        ServingConfig.from_env({"SERVING_ALLOWED_HOSTS": "a.example:http"})
