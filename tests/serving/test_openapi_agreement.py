"""The OpenAPI document and the validator agree: every body is checked by both, the
document's request schema with a real JSON Schema validator (2020-12, as OpenAPI 3.1 uses)
and the server through its test client. Row formats (``instances``, ``dataframe_records``,
``inputs``) must agree exactly; ``dataframe_split`` (any column order, which JSON Schema
cannot tie to the row arrays) is checked one way: what the server accepts, the document
accepts."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

from tests.serving.conftest import FEATURES, NUMERIC

BAD_VALUES = {
    "numeric": ["12", True, None, -1e9, 1e9, [1], {"a": 1}],
    "categorical": [1, True, None, "", "Atlantis", ["Biscoe"], {"a": 1}],
}


def bodies(row: dict) -> list[dict]:
    out = [{"instances": [row]}, {"dataframe_records": [row, row]}, {"inputs": [row]}]
    out.append({"inputs": {c: [row[c]] for c in FEATURES}})
    out.append({"instances": [row], "params": {"x": 1}})
    out += [{"instances": []}, {"instances": [{**row, "extra": 1}]}, {"instances": [row], "x": 1}]
    for column in FEATURES:
        missing = {k: v for k, v in row.items() if k != column}
        out.append({"instances": [missing]})
        kind = "numeric" if column in NUMERIC else "categorical"
        for value in BAD_VALUES[kind]:
            out.append({"instances": [{**row, column: value}]})
            out.append({"inputs": {**{c: [row[c]] for c in FEATURES}, column: [value]}})
    return out


@pytest.fixture
def document_and_client(make_app):
    app = make_app()
    client = app.test_client()
    doc = client.get("/openapi.json").get_json()
    schema = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    return Draft202012Validator(schema["schema"]), client


def test_validator_and_document_agree_on_row_formats(document_and_client, row):
    validator, client = document_and_client
    checked = 0
    for body in bodies(row):
        accepted = client.post("/predict", json=body).status_code == 200
        valid = validator.is_valid(body)
        assert accepted == valid, (body, accepted, [e.message for e in validator.iter_errors(body)])
        checked += 1
    assert checked > 90


def test_what_the_server_accepts_as_dataframe_split_the_document_accepts(
    document_and_client, golden
):
    validator, client = document_and_client
    rows = [r["inputs"] for r in golden["rows"][:3]]
    columns = list(reversed(FEATURES))
    body = {
        "dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}
    }
    variants = [body]
    for i in range(len(columns)):
        broken = copy.deepcopy(body)
        broken["dataframe_split"]["data"][0][i] = {"a": 1}
        variants.append(broken)
    for candidate in variants:
        if client.post("/predict", json=candidate).status_code == 200:
            assert validator.is_valid(candidate)
