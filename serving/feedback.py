"""``POST /feedback``: the true outcome of a served prediction, for monitoring to join.

Body: ``{"request_id": "...", "row": 0, "actual": ...}`` (``row`` defaults to 0) or
``{"items": [ ... ]}`` with up to :data:`MAX_ITEMS` of those. ``actual`` is one of the model's
classes (classification) or a finite number (regression). Each item becomes one line of the
feedback log: ``{"ts", "request_id", "row", "actual"}``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from serving.schema import RequestError

MAX_ITEMS = 1000
#: The largest row number taken (a request holds far fewer rows); the OpenAPI document says so.
MAX_ROW = 2**31 - 1
#: The longest class name taken while no model is loaded to name the classes.
MAX_CLASS_CHARS = 256
#: ``fullmatch``: ``$`` would also take a final newline.
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def parse_feedback(body: Any, model: Any | None) -> list[dict[str, Any]]:
    """The feedback items of ``body``, checked against the served ``model``'s task."""
    if type(body) is dict and "items" in body:
        if set(body) != {"items"}:
            raise RequestError(400, "format", '"items" must be the only key', "items")
        items = body["items"]
        if type(items) is not list or not items:
            raise RequestError(400, "format", "must be a non-empty array of items", "items")
        if len(items) > MAX_ITEMS:
            raise RequestError(
                413, "max_rows", f"{len(items)} items; at most {MAX_ITEMS} per request", "items"
            )
        return [_item(item, f"items[{i}]", model) for i, item in enumerate(items)]
    return [_item(body, None, model)]


def _item(raw: Any, where: str | None, model: Any | None) -> dict[str, Any]:
    def field(name: str) -> str:
        return f"{where}.{name}" if where else name

    if type(raw) is not dict:
        raise RequestError(400, "format", 'must be an object with "request_id" and "actual"', where)
    unknown = set(raw) - {"request_id", "row", "actual"}
    if unknown:
        name = sorted(map(str, unknown))[0][:64]
        raise RequestError(422, "unknown_field", f"unknown key {name!r}", field(name))
    request_id = raw.get("request_id")
    if type(request_id) is not str or not _ID.fullmatch(request_id):
        raise RequestError(
            422,
            "request_id",
            "must be the request id of a prediction (1-128 of A-Z a-z 0-9 . _ : -)",
            field("request_id"),
        )
    row = raw.get("row", 0)
    if type(row) is float and row.is_integer():
        row = int(row)  # JSON (and the document's "integer") does not tell 3.0 from 3
    if type(row) is not int or not 0 <= row <= MAX_ROW:
        raise RequestError(422, "type", f"must be a row number (0 to {MAX_ROW})", field("row"))
    if "actual" not in raw:
        raise RequestError(422, "required", "the true outcome is missing", field("actual"))
    actual = raw["actual"]
    if model is not None and model.task.is_regression:
        if type(actual) not in (int, float) or not math.isfinite(actual):
            raise RequestError(422, "type", "must be a finite number", field("actual"))
    elif model is not None:
        if type(actual) is not str or actual not in model.classes:
            raise RequestError(
                422,
                "category",
                "must be one of: " + ", ".join(model.classes),
                field("actual"),
            )
    elif not (
        (type(actual) is str and 0 < len(actual) <= MAX_CLASS_CHARS)
        or (type(actual) in (int, float) and math.isfinite(actual))
    ):
        # No model to check against (it failed to load): the shape the log's readers expect.
        raise RequestError(
            422,
            "type",
            f"must be a class (1-{MAX_CLASS_CHARS} characters) or a finite number",
            field("actual"),
        )
    return {"request_id": request_id, "row": row, "actual": actual}
