"""The OpenAPI document and the validator agree, body for body.

Thousands of generated request bodies (valid ones and broken ones: wrong types, nulls, ``""``,
unknown categories, out-of-range and non-finite numbers, missing and extra columns, bad
``dataframe_split`` shapes, stray keys, each body format) are checked by both sides: the
document's request schema with a real JSON Schema validator (2020-12, as OpenAPI 3.1 uses) and
the server's validator (``InputSchema.feed_from_body``, then the app through its test client).
The two must give the same verdict on every body, under both the default (reject) policies
and the accepting ones. The many bodies go through ``jsonschema-rs`` (about 100 times faster);
a share of them also through the reference ``jsonschema``, which must give the same verdicts.

Excluded, each for a reason:

* a columnar ``inputs`` body whose column arrays differ in length: "all arrays the same
  length" is a cross-field rule JSON Schema cannot state; the test checks instead that the
  server refuses every such body with 422 ``row_shape``;
* NaN: not JSON (the document describes parsed JSON values), and JSON Schema's ``minimum`` /
  ``maximum`` do not order NaN. ``inf`` is kept: JSON's ``1e309`` reads as inf and both sides
  refuse it.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import jsonschema_rs
import pytest
from jsonschema import Draft202012Validator

from serving.config import ServingConfig
from serving.model import load_model
from serving.openapi import build_openapi, request_schema
from serving.schema import InputSchema, RequestError

MAX_ROWS = 12  # small, so "more rows than allowed" is cheap; > 8 reaches the vectorised checks
POLICIES = {
    "reject": {},
    "accept": {"unknown_categories": "accept", "out_of_range": "accept"},
}
_COUNTS = [0, 1, 1, 1, 2, 3, 9, 10, MAX_ROWS, MAX_ROWS + 1]
_ODD = [None, "", "12", True, False, 0, 1.5, [1], {"a": 1}, [], "Atlantis"]


def numeric_values(rule) -> list[Any]:
    column = rule.column
    lo, hi = column.min, column.max
    values = [lo, hi, (lo + hi) / 2, int(lo) + 1, lo - 0.5, hi + 0.5, -1e300, 1e308, -1e308]
    return values + [float("inf"), -float("inf"), 10**400, -(10**20), 0]


def categorical_values(rule) -> list[Any]:
    known = list(rule.column.categories)
    return known + [k.upper() for k in known] + ["Atlantis", " ", "", None, 1, 2.5, True]


class Bodies:
    """Random request bodies near the model's rules: mostly valid cells, so that many bodies
    are accepted, with one or more things broken in the others."""

    def __init__(self, schema: InputSchema, valid_row: dict, seed: int):
        self.rng = random.Random(seed)
        self.schema = schema
        self.valid_row = valid_row
        self.pools = {
            r.name: (numeric_values(r) if r.numeric else categorical_values(r)) + _ODD
            for r in schema.rules
        }

    def cell(self, name: str) -> Any:
        if self.rng.random() < 0.97:
            return self.valid_row[name]
        return self.rng.choice(self.pools[name])

    def row(self) -> Any:
        rng = self.rng
        row = {name: self.cell(name) for name in self.schema.names}
        roll = rng.random()
        if roll < 0.02:
            del row[rng.choice(self.schema.names)]
        elif roll < 0.04:
            row[rng.choice(["extra", "Island", ""])] = 1
        elif roll < 0.05:
            return rng.choice([None, [], "row", list(row.values())])
        return row

    def rows(self) -> list:
        return [self.row() for _ in range(self.rng.choice(_COUNTS))]

    def payload(self, key: str) -> Any:
        rng = self.rng
        rows = self.rows()
        if key == "dataframe_split":
            return self.split(rows)
        if key == "inputs" and rng.random() < 0.5:
            return self.columnar(rows)
        if rng.random() < 0.02:
            return rng.choice([{}, "rows", None, 3])
        return rows

    def columnar(self, rows: list) -> Any:
        rng = self.rng
        names = list(self.schema.names)
        clean = [r for r in rows if type(r) is dict and r.keys() == set(names)]
        columns: dict[str, Any] = {n: [r[n] for r in clean] for n in names}
        roll = rng.random()
        if roll < 0.05 and clean:
            columns[rng.choice(names)].pop()  # unequal lengths: the excluded rule
        elif roll < 0.08:
            del columns[rng.choice(names)]
        elif roll < 0.10:
            columns["extra"] = [1] * len(clean)
        elif roll < 0.12:
            columns[rng.choice(names)] = rng.choice([None, "x", {"a": 1}])
        return columns

    def split(self, rows: list) -> Any:
        rng = self.rng
        columns = list(self.schema.names)
        rng.shuffle(columns)
        data = [
            [r.get(c) for c in columns] if type(r) is dict else r
            for r in rows
            if type(r) is not dict or set(r) <= set(columns)
        ]
        split: dict[str, Any] = {"columns": columns, "data": data}
        roll = rng.random()
        if roll < 0.03:
            split["columns"] = columns[:-1]
        elif roll < 0.06:
            split["columns"] = [*columns, rng.choice(["extra", columns[0]])]
        elif roll < 0.08:
            split["columns"] = [*columns[:-1], 7]
        elif roll < 0.10 and data:
            data[0] = data[0][:-1] if type(data[0]) is list else data[0]
        elif roll < 0.12 and data:
            data[-1] = [*data[-1], 1] if type(data[-1]) is list else data[-1]
        elif roll < 0.15:
            split["index"] = rng.choice([list(range(len(data))), [], 0, "i", None])
        elif roll < 0.17:
            split[rng.choice(["extra", "Columns"])] = []
        elif roll < 0.19:
            split["data"] = rng.choice([None, {}, "data"])
        elif roll < 0.21:
            split["columns"] = rng.choice([None, "island", {}])
        return split

    def body(self) -> Any:
        rng = self.rng
        key = rng.choice(["instances", "dataframe_records", "dataframe_split", "inputs"])
        body: dict[str, Any] = {key: self.payload(key)}
        roll = rng.random()
        if roll < 0.10:
            body["params"] = rng.choice([{}, {"k": 1}, None, [], "p"])
        elif roll < 0.12:
            body[rng.choice(["instances", "inputs", "extra", "Params"])] = []
        elif roll < 0.13:
            return rng.choice([[], "body", None, 1, {}, {"params": {}}])
        elif roll < 0.14:
            return {rng.choice(["records", "Instances", "data"]): body[key]}
        return body


def unequal_columns(body: Any) -> bool:
    """A columnar ``inputs`` body whose arrays differ in length (the excluded rule)."""
    payload = body.get("inputs") if type(body) is dict else None
    if type(payload) is not dict:
        return False
    lengths = {len(v) for v in payload.values() if type(v) is list}
    return len(lengths) > 1


def accepts(schema: InputSchema, body: Any) -> bool:
    try:
        schema.feed_from_body(json.loads(json.dumps(body)))
    except RequestError:
        return False
    return True


def disagreements(
    schema: InputSchema, document: dict, bodies: list, validator_class: Any = None
) -> list[tuple]:
    """The bodies the two sides judge differently: ``(body, server, document, errors)``."""
    validator = (validator_class or jsonschema_rs.Draft202012Validator)(document)
    out = []
    for body in bodies:
        if unequal_columns(body):
            continue
        server, valid = accepts(schema, body), validator.is_valid(body)
        if server != valid:
            out.append((body, server, valid, [e.message for e in validator.iter_errors(body)]))
    return out


@pytest.fixture(scope="module", params=sorted(POLICIES))
def served(request, exported_model):
    config = ServingConfig.from_env({}, max_rows=MAX_ROWS, **POLICIES[request.param])
    return load_model(exported_model, config), config


@pytest.fixture(scope="module")
def valid_row(exported_model) -> dict:
    golden = json.loads((exported_model / "golden.json").read_text())
    return next(
        r["inputs"]
        for r in golden["rows"]
        if r["inputs"]["island"] in ("Biscoe", "Dream", "Torgersen")
        and all(v is not None for v in r["inputs"].values())
    )


def generate(schema: InputSchema, valid_row: dict, n: int, seed: int) -> list:
    bodies = Bodies(schema, valid_row, seed)
    return [bodies.body() for _ in range(n)]


def request_body_schema(document: dict) -> dict:
    content = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    return content["application/json"]["schema"]


def test_validator_and_document_agree_on_every_generated_body(served, valid_row):
    model, config = served
    document = request_body_schema(build_openapi(model, config))
    bodies = generate(model.schema, valid_row, 4000, seed=20261201)
    assert disagreements(model.schema, document, bodies) == []
    assert disagreements(model.schema, document, bodies[:300], Draft202012Validator) == []
    # Not vacuous: every format has bodies each side accepts and bodies it refuses.
    validator = Draft202012Validator(document)
    for key in ("instances", "dataframe_records", "dataframe_split", "inputs"):
        verdicts = [accepts(model.schema, b) for b in bodies if type(b) is dict and key in b]
        assert verdicts.count(True) >= 40, key
        assert verdicts.count(False) >= 40, key
    excluded = [b for b in bodies if unequal_columns(b)]
    assert len(excluded) >= 5
    for body in excluded:  # what the document cannot state, the server refuses
        with pytest.raises(RequestError) as refused:
            model.schema.feed_from_body(body)
        if refused.value.rule != "row_shape":  # another rule broke first: the document agrees
            assert not validator.is_valid(body)


def test_the_app_answers_as_the_document_says(make_app, exported_model, valid_row):
    """Through HTTP parsing and the app, not only the validator: 200 exactly when valid."""
    client = make_app(max_rows=MAX_ROWS).test_client()
    document = request_body_schema(client.get("/openapi.json").get_json())
    validator = Draft202012Validator(document)
    model = load_model(exported_model, ServingConfig.from_env({}, max_rows=MAX_ROWS))
    for body in generate(model.schema, valid_row, 300, seed=7):
        if unequal_columns(body):
            continue
        response = client.post("/predict", data=json.dumps(body), content_type="application/json")
        assert (response.status_code == 200) == validator.is_valid(body), (body, response.json)
        assert response.status_code in (200, 400, 413, 422), response.json


def test_the_check_catches_either_side_loosened(served, valid_row):
    """A document or a validator one rule looser than the other is reported."""
    model, config = served
    strict = model.schema
    bodies = generate(strict, valid_row, 1500, seed=3)
    # The document loosened: island declared nullable.
    loose_columns = [
        dataclasses.replace(c, nullable=True) if c.name == "island" else c for c in strict.columns
    ]
    loose = InputSchema(
        loose_columns,
        max_rows=strict.max_rows,
        reject_unknown_categories=strict.reject_unknown_categories,
        reject_out_of_range=strict.reject_out_of_range,
    )
    found = disagreements(strict, request_schema(loose), bodies)
    assert found and all(server is False and valid is True for _, server, valid, _ in found)
    # The validator loosened: a larger row limit than the document states.
    wider = InputSchema(
        strict.columns,
        max_rows=strict.max_rows + 1,
        reject_unknown_categories=strict.reject_unknown_categories,
        reject_out_of_range=strict.reject_out_of_range,
    )
    found = disagreements(wider, request_schema(strict), bodies)
    assert found and all(server is True and valid is False for _, server, valid, _ in found)


@pytest.mark.parametrize("policy", ["reject", "accept"])
def test_a_boolean_column_takes_json_booleans_on_both_sides(policy):
    """A boolean feature is drafted as categories 'False'/'True' (str of the values training
    saw); ``{"flag": true}``, as a client holding the table's rows sends it, got 422 "must be a
    string, got a boolean", and only the string "True" worked."""
    from serving.schema import Column

    columns = [
        Column("flag", "categorical", nullable=True, categories=("False", "True")),
        Column("x", "numeric", nullable=False, min=0.0, max=1.0),
        Column("colour", "categorical", nullable=False, categories=("blue", "red")),
    ]
    schema = InputSchema(columns, max_rows=20, reject_unknown_categories=policy == "reject")
    document = {**request_schema(schema), "$schema": "https://json-schema.org/draft/2020-12/schema"}
    validator = Draft202012Validator(document)

    def verdict(rows):
        body = {"instances": rows}
        try:
            _, feed = schema.feed_from_body(body)
        except RequestError as exc:
            served = exc.status
        else:
            served = 200
        return served, validator.is_valid(body), feed if served == 200 else None

    row = {"flag": True, "x": 0.5, "colour": "red"}
    for rows in ([row], [row] * 12, [{**row, "flag": False}], [{**row, "flag": "True"}],
                 [{**row, "flag": None}]):  # fmt: skip
        served, documented, feed = verdict(rows)
        assert (served, documented) == (200, True), rows
        flag = rows[0]["flag"]
        assert feed["flag"][0, 0] == ("" if flag is None else str(flag))
    # A boolean is a category only for a boolean column, and 1 is not true.
    for bad in ({**row, "colour": True}, {**row, "flag": 1}, {**row, "flag": "yes"}):
        served, documented, _ = verdict([bad])
        if policy == "accept" and bad["flag"] == "yes":
            assert (served, documented) == (200, True)
        else:
            assert served == 422 and documented is False, bad


@pytest.mark.parametrize("policy", ["reject", "accept"])
def test_an_integer_coded_column_takes_json_integers_on_both_sides(policy):
    """A column of integer codes is drafted as categories '1', '2', '3' (training writes
    ``str(code)``); ``{"grade": 3}``, as a client holding the table's rows sends it, got 422
    "must be a string, got an integer" and only the string "3" worked."""
    from serving.schema import Column

    columns = [
        Column("grade", "categorical", nullable=True, categories=("1", "2", "3", "10")),
        Column("x", "numeric", nullable=False, min=0.0, max=1.0),
        Column("colour", "categorical", nullable=False, categories=("blue", "red")),
    ]
    schema = InputSchema(columns, max_rows=20, reject_unknown_categories=policy == "reject")
    document = {**request_schema(schema), "$schema": "https://json-schema.org/draft/2020-12/schema"}
    validators = (Draft202012Validator(document), jsonschema_rs.validator_for(document))

    def verdict(rows):
        body = {"instances": rows}
        try:
            _, feed = schema.feed_from_body(json.loads(json.dumps(body)))
        except RequestError as exc:
            served, feed = exc.status, None
        else:
            served = 200
        documented = {v.is_valid(body) for v in validators}
        assert len(documented) == 1, rows  # the two JSON Schema validators agree
        return served, documented.pop(), feed

    row = {"grade": 3, "x": 0.5, "colour": "red"}
    for rows, code in (([row], "3"), ([row] * 12, "3"), ([{**row, "grade": 10}], "10"),
                       ([{**row, "grade": 2.0}], "2"), ([{**row, "grade": "1"}], "1"),
                       ([{**row, "grade": None}], "")):  # fmt: skip
        served, documented, feed = verdict(rows)
        assert (served, documented) == (200, True), rows
        assert feed["grade"][0, 0] == code
    # Codes are integers only in an integer-coded column; 2.5 and true are not codes.
    for bad in ({**row, "colour": 1}, {**row, "grade": 2.5}, {**row, "grade": True},
                {**row, "grade": 7}, {**row, "grade": float("inf")}):  # fmt: skip
        served, documented, _ = verdict([bad])
        if policy == "accept" and bad["grade"] == 7:
            assert (served, documented) == (200, True)
        else:
            assert served == 422 and documented is False, bad
    with pytest.raises(RequestError, match="must be a string or an integer, got a number"):
        schema.feed_from_body({"instances": [{**row, "grade": 2.5}]})
