"""The OpenAPI 3.1 document, generated from the model descriptor and the server's settings."""

from __future__ import annotations

from typing import Any

from serving.config import ServingConfig
from serving.model import LoadedModel

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _column_schema(column, config: ServingConfig) -> dict[str, Any]:
    if column.kind == "numeric":
        schema: dict[str, Any] = {"type": ["number", "null"] if column.nullable else "number"}
        if config.out_of_range == "reject":
            if column.min is not None:
                schema["minimum"] = column.min
            if column.max is not None:
                schema["maximum"] = column.max
        else:
            schema["description"] = f"expected range [{column.min}, {column.max}]"
        return schema
    schema = {"type": ["string", "null"] if column.nullable else "string"}
    if column.categories:
        if config.unknown_categories == "reject":
            # A nullable column also takes "" (how the graph encodes a missing string).
            schema["enum"] = [*column.categories, *([None, ""] if column.nullable else [])]
        else:
            schema["description"] = (
                "known categories: " + ", ".join(column.categories) + "; others are accepted "
                "and encoded as all zeros"
            )
    return schema


def build_openapi(model: LoadedModel | None, config: ServingConfig) -> dict[str, Any]:
    """The whole document; without a model, the request schema is left open."""
    if model is not None:
        columns = model.schema.columns
        row = {
            "type": "object",
            "additionalProperties": False,
            "required": [c.name for c in columns],
            "properties": {c.name: _column_schema(c, config) for c in columns},
        }
        classes = list(model.classes)
        title = f"{model.name} prediction service"
        version = model.version
        regression = model.task.is_regression
        columnar = {
            "type": "object",
            "additionalProperties": False,
            "required": [c.name for c in columns],
            "properties": {
                c.name: {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": config.max_rows,
                    "items": _column_schema(c, config),
                }
                for c in columns
            },
        }
    else:
        row, classes, title, version = {"type": "object"}, [], "prediction service", "unloaded"
        regression, columnar = False, {"type": "object"}
    rows = {"type": "array", "minItems": 1, "maxItems": config.max_rows, "items": row}
    split = {
        "type": "object",
        "required": ["columns", "data"],
        "additionalProperties": False,
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {
                "type": "array",
                "minItems": 1,
                "maxItems": config.max_rows,
                "items": {"type": "array"},
            },
            "index": {"type": "array"},
        },
    }
    secured = config.api_token is not None
    security = [{"bearerAuth": []}] if secured else []

    def errors(*codes: int) -> dict[str, Any]:
        text = {
            400: "Malformed JSON or a body in none of the accepted formats.",
            401: "Missing or wrong bearer token.",
            413: "Body larger than the limit, or more rows than the limit.",
            415: "Content-Type is not application/json.",
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
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _one_key("instances", rows),
                                        _one_key("dataframe_records", rows),
                                        _one_key("dataframe_split", split),
                                        _one_key("inputs", {"oneOf": [rows, columnar]}),
                                    ]
                                }
                            }
                        },
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
                        "row": {"type": "integer", "minimum": 0, "default": 0},
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
        "properties": {key: schema, "params": {"type": "object"}},
    }
