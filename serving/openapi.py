"""The OpenAPI 3.1 document, generated from the model descriptor and the server's settings."""

from __future__ import annotations

from typing import Any

from serving.config import ServingConfig
from serving.feedback import MAX_ROW
from serving.model import LoadedModel
from serving.schema import (
    COLUMNS,
    LAYOUTS,
    PARAMS,
    RECORDS,
    SPLIT,
    SPLIT_REQUIRED,
    InputSchema,
    Rule,
)

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def column_schema(rule: Rule) -> dict[str, Any]:
    """One column's rule as JSON Schema (the validator in ``serving.schema`` checks the same
    :class:`~serving.schema.Rule`)."""
    column = rule.column
    if rule.numeric:
        schema: dict[str, Any] = {
            "type": ["number", "null"] if rule.nullable else "number",
            "minimum": rule.minimum,
            "maximum": rule.maximum,
        }
        if not rule.check_range:
            schema["description"] = (
                f"any finite number; expected range [{column.min}, {column.max}]"
                if column.min is not None or column.max is not None
                else "any finite number"
            )
        return schema
    types = [
        "string",
        *(["boolean"] if rule.booleans else []),
        *(["integer"] if rule.integers else []),
        *(["null"] if rule.nullable else []),
    ]
    if rule.allowed is not None:
        # A nullable column also takes "" (how the graph encodes a missing string).
        missing = list(rule.missing) if rule.nullable else []
        flags = [b for b in (True, False) if rule.booleans and str(b) in rule.allowed]
        codes = [int(c) for c in rule.allowed] if rule.integers else []
        return {
            "type": types if len(types) > 1 else "string",
            "enum": [*rule.allowed, *flags, *codes, *missing],
        }
    schema = {"type": types if len(types) > 1 else "string"}
    if not rule.nullable:
        schema["minLength"] = 1  # "", the missing string, is refused with null
    if column.categories:
        schema["description"] = (
            "known categories: " + ", ".join(column.categories) + "; others are accepted "
            "and encoded as all zeros"
        )
    return schema


def request_schema(schema: InputSchema) -> dict[str, Any]:
    """The ``/predict`` request body: every key of :data:`~serving.schema.LAYOUTS` with the
    layouts it takes, each holding rows of the model's :attr:`~serving.schema.InputSchema.rules`.
    Exact, except for one cross-field rule JSON Schema cannot state: the arrays of a columnar
    ``inputs`` body must hold the same number of values (the server answers 422 otherwise)."""
    rules = schema.rules
    names = [r.name for r in rules]
    cells = {r.name: column_schema(r) for r in rules}

    def rows_of(item: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "maxItems": schema.max_rows, "items": item}

    width = len(names)
    # Which rule a cell of "data" follows depends on the name at the same position of
    # "columns" (any order is accepted): one if/then per (position, name) pair states that.
    by_position = [
        {
            "if": {"properties": {"columns": {"prefixItems": [{}] * j + [{"const": name}]}}},
            "then": {"properties": {"data": {"items": {"prefixItems": [{}] * j + [cells[name]]}}}},
        }
        for j in range(width)
        for name in names
    ]
    layouts = {
        RECORDS: rows_of(
            {
                "type": "object",
                "additionalProperties": False,
                "required": names,
                "properties": cells,
            }
        ),
        SPLIT: {
            "type": "object",
            "additionalProperties": False,
            "required": list(SPLIT_REQUIRED),
            "properties": {
                "columns": {
                    "type": "array",
                    "items": {"enum": names},
                    "minItems": width,
                    "maxItems": width,
                    "uniqueItems": True,
                },
                "data": rows_of({"type": "array", "minItems": width, "maxItems": width}),
                "index": {"type": "array", "description": "accepted and not used"},
            },
            "allOf": by_position,
        },
        COLUMNS: {
            "type": "object",
            "description": "one array per column, all of the same length",
            "additionalProperties": False,
            "required": names,
            "properties": {name: rows_of(cells[name]) for name in names},
        },
    }
    branches = []
    for key, accepted in LAYOUTS.items():
        options = [layouts[layout] for layout in accepted]
        branches.append(_one_key(key, options[0] if len(options) == 1 else {"oneOf": options}))
    return {"oneOf": branches}


def build_openapi(model: LoadedModel | None, config: ServingConfig) -> dict[str, Any]:
    """The whole document; without a model, the request schema is left open."""
    if model is not None:
        body = request_schema(model.schema)
        classes = list(model.classes)
        title = f"{model.name} prediction service"
        version = model.version
        regression = model.task.is_regression
    else:
        body = {"type": "object"}
        classes, title, version, regression = [], "prediction service", "unloaded", False
    secured = config.api_token is not None
    security = [{"bearerAuth": []}] if secured else []

    def errors(*codes: int) -> dict[str, Any]:
        text = {
            400: "Malformed JSON or a body in none of the accepted formats.",
            401: "Missing or wrong bearer token.",
            413: "Body larger than the limit, or more rows than the limit.",
            415: "Content-Type is not application/json, or Content-Encoding is not identity.",
            422: "A value breaks the model's input schema (the error names field and rule).",
            503: "No model loaded yet.",
        }
        return {
            str(code): {
                "description": text[code],
                "content": {"application/json": {"schema": _ERROR_REF}},
            }
            for code in codes
            if code != 401 or secured
        }

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Generated from the model descriptor. Unknown categories: "
                f"{config.unknown_categories}; numbers outside the descriptor's range: "
                f"{config.out_of_range}; at most {config.max_rows} rows and "
                f"{config.max_body_bytes} bytes per request."
            ),
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Predict the value of each row"
                    if regression
                    else "Predict the class of each row",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": body}},
                    },
                    "responses": {
                        "200": {
                            "description": "One prediction per row, in order.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Predictions"}
                                }
                            },
                        },
                        **errors(400, 401, 413, 415, 422, 503),
                    },
                }
            },
            "/feedback": {
                "post": {
                    "summary": "The true outcome of served rows, by request id, for monitoring",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Feedback"},
                                        {
                                            "type": "object",
                                            "required": ["items"],
                                            "additionalProperties": False,
                                            "properties": {
                                                "items": {
                                                    "type": "array",
                                                    "minItems": 1,
                                                    "maxItems": 1000,
                                                    "items": {
                                                        "$ref": "#/components/schemas/Feedback"
                                                    },
                                                }
                                            },
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {"description": "Accepted: appended to the feedback log."},
                        "404": {"description": "Feedback is off (no SERVING_FEEDBACK_LOG)."},
                        **errors(400, 401, 413, 415, 422),
                    },
                }
            },
            "/metadata": {
                "get": {
                    "summary": "The served model: name, version, inputs, classes, lineage",
                    "security": security,
                    "responses": {"200": {"description": "Model metadata."}, **errors(401, 503)},
                }
            },
            "/health/live": {
                "get": {
                    "summary": "The process answers",
                    "responses": {"200": {"description": "Alive."}},
                }
            },
            "/health/ready": {
                "get": {
                    "summary": "A model is loaded and reproduces its golden examples",
                    "responses": {
                        "200": {"description": "Ready."},
                        "503": {"description": "Not ready; the body says why."},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Text exposition."}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1."}},
                }
            },
        },
        "components": {
            "schemas": {
                "Predictions": {
                    "type": "object",
                    "required": ["predictions", "model", "variant", "request_id"],
                    "properties": {
                        "predictions": {
                            "type": "array",
                            "items": {"type": "number"}
                            if regression
                            else {
                                "type": "object",
                                "required": ["label", "probabilities"],
                                "properties": {
                                    "label": {
                                        "type": "string",
                                        **({"enum": classes} if classes else {}),
                                    },
                                    "probabilities": {
                                        "type": "object",
                                        "description": "Probability of each class.",
                                        "properties": {c: {"type": "number"} for c in classes},
                                    },
                                },
                            },
                        },
                        "model": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "version": {"type": "string"},
                            },
                        },
                        "variant": {"type": "string", "enum": ["champion", "challenger"]},
                        "request_id": {"type": "string"},
                    },
                },
                "Feedback": {
                    "type": "object",
                    "required": ["request_id", "actual"],
                    "additionalProperties": False,
                    "properties": {
                        "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                        "row": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_ROW,
                            "default": 0,
                        },
                        "actual": {"type": "number"}
                        if regression
                        else {"type": "string", **({"enum": classes} if classes else {})},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "rule", "message"],
                            "properties": {
                                "status": {"type": "integer"},
                                "rule": {"type": "string"},
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    return doc


def _one_key(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A body with ``key`` and, optionally, MLflow's ``params`` (accepted, not used)."""
    return {
        "type": "object",
        "required": [key],
        "additionalProperties": False,
        "properties": {key: schema, PARAMS: {"type": "object"}},
    }
