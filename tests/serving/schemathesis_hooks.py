"""Schemathesis hooks for tests/serving/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

The served document states ``dataframe_split`` exactly: the rule a cell of ``data`` follows
depends on the column name at the same position of ``columns`` (any order is accepted), one
``if``/``then`` per (position, name). Schemathesis cannot generate from ``if``/``then``, so for
*generation only* that part is replaced with a subset it can draw from: two fixed column orders
(the model's and its reverse) with the cells' rules by position. Every verdict is still the
served document's: a failure is judged against the document as served, with a real JSON Schema
validator, and dropped only where the document and the server agree:

* ST201 (a schema-violating body accepted) when the body violates only the generation
  subset and is valid under the served document (another column order, say);
* ST202 (a schema-valid body refused) for a columnar ``inputs`` body whose arrays differ in
  length, refused with 422 ``row_shape``: equal lengths across properties is the one
  cross-field rule JSON Schema cannot state (serving/openapi.py says so).
"""

from __future__ import annotations

import copy
import json

import jsonschema_rs
import schemathesis

_SERVED: dict[str, jsonschema_rs.Validator] = {}


def _predict_schema(raw_schema: dict) -> dict:
    content = raw_schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    return content["application/json"]["schema"]


def _generation_subset(split: dict) -> None:
    """Replace the per-position ``if``/``then`` of ``split`` with two fixed column orders."""
    names = list(split["properties"]["columns"]["items"]["enum"])
    cells = {}
    for clause in split.pop("allOf"):
        position = len(clause["if"]["properties"]["columns"]["prefixItems"]) - 1
        if position == 0:
            name = clause["if"]["properties"]["columns"]["prefixItems"][0]["const"]
            cells[name] = clause["then"]["properties"]["data"]["items"]["prefixItems"][0]
    width = len(names)
    orders = []
    for order in (names, names[::-1]):
        variant = copy.deepcopy(split)
        variant["properties"]["columns"] = {"const": order}
        variant["properties"]["data"]["items"] = {
            "type": "array",
            "prefixItems": [cells[n] for n in order],
            "minItems": width,
            "maxItems": width,
        }
        orders.append(variant)
    split.clear()
    split["oneOf"] = orders


@schemathesis.hook
def before_load_schema(context, raw_schema: dict) -> None:
    body = _predict_schema(raw_schema)
    _SERVED["predict"] = jsonschema_rs.Draft202012Validator(copy.deepcopy(body))
    for branch in body.get("oneOf", []):
        split = branch.get("properties", {}).get("dataframe_split")
        if split is not None and "allOf" in split:
            _generation_subset(split)


def _unequal_columns(body) -> bool:
    payload = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(payload, dict):
        return False
    return len({len(v) for v in payload.values() if isinstance(v, list)}) > 1


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    if failure.code not in ("ST201", "ST202") or case.operation.path != "/predict":
        return True
    served = _SERVED["predict"]
    if failure.code == "ST201":
        return not served.is_valid(case.body)  # the server accepted: fine if the document does
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return True
    excused = _unequal_columns(case.body) and error.get("rule") == "row_shape"
    return not excused
