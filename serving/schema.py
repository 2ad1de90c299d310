"""Request validation against the model descriptor, and the ONNX feed it produces.

Everything the hot path needs is worked out once per model in :class:`InputSchema`; a request
is then one pass per column in plain Python that checks each value and builds that column's
``[N, 1]`` input array. The first problem found becomes a :class:`RequestError` naming the
field and the rule; values sent by the client are never echoed back.

The input rules are defined here once: :class:`Rule` (what one column accepts under the
server's policies) and :data:`LAYOUTS` (how each body key carries its rows). The validator
below reads them, and ``serving/openapi.py`` renders the same objects as the JSON Schema of
the request body, so the two cannot drift apart. The one rule JSON Schema cannot state is
cross-field: the column arrays of a columnar ``inputs`` body must have equal lengths.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_spec.feed import category_text

#: Row layouts of a request body: an array of ``{column: value}`` objects, MLflow's
#: ``{"columns": [...], "data": [[...], ...]}``, an object of column arrays.
RECORDS, SPLIT, COLUMNS = "records", "split", "columns"
#: Request body keys this server accepts and the layouts each may hold: ours, then MLflow's
#: scoring formats (``inputs``: row objects, or an object of column arrays).
LAYOUTS: dict[str, tuple[str, ...]] = {
    "instances": (RECORDS,),
    "dataframe_records": (RECORDS,),
    "dataframe_split": (SPLIT,),
    "inputs": (RECORDS, COLUMNS),
}
FORMATS = tuple(LAYOUTS)
#: Keys of a ``dataframe_split`` object (``index`` is accepted and not used).
SPLIT_KEYS = ("columns", "data", "index")
SPLIT_REQUIRED = ("columns", "data")
#: MLflow's optional inference parameters key, accepted beside any format (must be an object).
PARAMS = "params"
#: How a missing string reaches the graph (ONNX string tensors cannot hold NaN).
MISSING_STRING = ""
#: The largest finite float64. A number column without enforced bounds still refuses inf (a
#: JSON number too large for a float64, such as ``1e309``, reads as inf): these are the bounds
#: that make "finite" a rule the OpenAPI document can state.
FLOAT_MAX = sys.float_info.max
_NAN = math.nan
_NUMBER_TYPES = frozenset((float, int))
_STR_TYPE = frozenset((str,))
_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "an object",
}


class RequestError(Exception):
    """A client error: HTTP status, the rule that failed, the field it failed on."""

    def __init__(self, status: int, rule: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.rule = rule
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"status": self.status, "rule": self.rule}
        if self.field is not None:
            error["field"] = self.field
        error["message"] = self.message
        return {"error": error}


@dataclass(frozen=True)
class Column:
    """One model input as the descriptor describes it."""

    name: str
    kind: str  # "numeric" | "categorical"
    nullable: bool
    categories: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    #: The graph input this column feeds (``model_spec``'s mapping; the name when unset).
    onnx_name: str = ""

    @classmethod
    def from_spec(cls, spec) -> Column:
        """From a :class:`model_spec.descriptor.InputSpec`."""
        return cls(
            name=spec.name,
            kind=spec.kind,
            nullable=spec.nullable,
            categories=tuple(spec.categories),
            min=spec.min,
            max=spec.max,
            onnx_name=spec.onnx_name,
        )

    def __post_init__(self) -> None:
        if not self.onnx_name:
            object.__setattr__(self, "onnx_name", self.name)

    @classmethod
    def from_descriptor(cls, spec: Mapping[str, Any]) -> Column:
        kind = spec["kind"]
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"input {spec.get('name')!r}: unknown kind {kind!r}")
        return cls(
            name=str(spec["name"]),
            kind=kind,
            nullable=bool(spec.get("nullable", False)),
            categories=tuple(str(c) for c in spec.get("categories") or ()),
            min=None if spec.get("min") is None else float(spec["min"]),
            max=None if spec.get("max") is None else float(spec["max"]),
        )


#: How a boolean column's values read as categories (``str(True)``, as training writes them).
BOOLEAN_CATEGORIES = frozenset({"False", "True"})
#: How an integer code reads as a category (``str(3)``, as training writes it; ``1.0`` too).
_INTEGER_TEXT = re.compile(r"-?(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class Rule:
    """What one column accepts, the server's policies applied: the one definition of a
    column's input rule. The validator checks exactly these fields, and the OpenAPI document
    renders exactly these fields (``serving.openapi``)."""

    column: Column
    #: Numbers outside ``[minimum, maximum]`` are refused: the descriptor's range when
    #: ``check_range`` (rule ``range``), else only non-finite values (``+-FLOAT_MAX``, rule
    #: ``finite``).
    minimum: float = -FLOAT_MAX
    maximum: float = FLOAT_MAX
    check_range: bool = False
    #: The strings accepted (besides the missing values); ``None``: any non-empty string.
    allowed: tuple[str, ...] | None = None
    #: A boolean column as training wrote it (categories ``False``/``True``): JSON ``true`` and
    #: ``false`` are taken for those strings, as a client holding the table's rows sends them.
    booleans: bool = False
    #: A column of integer codes (categories ``1``, ``2``, ...): JSON integers are taken for
    #: those strings (``3`` for ``"3"``, and ``3.0``, as pandas reads a code column with gaps),
    #: as a client holding the table's rows sends them.
    integers: bool = False

    @classmethod
    def of(cls, column: Column, *, reject_unknown_categories: bool, reject_out_of_range: bool):
        if column.kind == "numeric":
            check = reject_out_of_range and (column.min is not None or column.max is not None)
            lo = column.min if check and column.min is not None else -FLOAT_MAX
            hi = column.max if check and column.max is not None else FLOAT_MAX
            return cls(column, minimum=lo, maximum=hi, check_range=check)
        known = tuple(c for c in column.categories if c != MISSING_STRING)
        closed = reject_unknown_categories and bool(known)
        booleans = bool(known) and set(known) <= BOOLEAN_CATEGORIES
        integers = bool(known) and all(_INTEGER_TEXT.fullmatch(k) for k in known)
        return cls(column, allowed=known if closed else None, booleans=booleans, integers=integers)

    @property
    def name(self) -> str:
        return self.column.name

    @property
    def numeric(self) -> bool:
        return self.column.kind == "numeric"

    @property
    def nullable(self) -> bool:
        return self.column.nullable

    @property
    def missing(self) -> tuple[None | str, ...]:
        """The values that mean "missing", accepted only when the column is nullable: null,
        and for a string column also ``""`` (how the graph encodes a missing string)."""
        return (None,) if self.numeric else (None, MISSING_STRING)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), "an unsupported type")


def _short(name: Any) -> str:
    text = str(name)
    return text if len(text) <= 64 else text[:61] + "..."


class InputSchema:
    """Validates request bodies for one model and turns them into its ONNX feed."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        max_rows: int,
        reject_unknown_categories: bool = True,
        reject_out_of_range: bool = True,
    ):
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in self.columns)
        self.name_set = frozenset(self.names)
        self.max_rows = max_rows
        self.reject_unknown_categories = reject_unknown_categories
        self.reject_out_of_range = reject_out_of_range
        #: Each column's rule: what the checks below read and the OpenAPI document renders.
        self.rules = tuple(
            Rule.of(
                c,
                reject_unknown_categories=reject_unknown_categories,
                reject_out_of_range=reject_out_of_range,
            )
            for c in self.columns
        )
        self._required = ", ".join(self.names)
        # (column name, graph input name, converter): requests use the column names, the feed
        # is keyed by each column's ONNX input name.
        self._converters = []
        for rule in self.rules:
            if rule.numeric:
                convert = self._numeric_converter(rule)
            else:
                convert = self._categorical_converter(rule)
            self._converters.append((rule.name, rule.column.onnx_name, convert))

    # ------------------------------------------------------------------ request bodies
    def feed_from_body(self, body: Any) -> tuple[int, dict[str, np.ndarray]]:
        """Return ``(rows, feed)`` for a parsed JSON body in any accepted format."""
        if type(body) is dict and PARAMS in body:
            # MLflow's inference parameters: this model takes none; they must be an object.
            if type(body[PARAMS]) is not dict:
                raise RequestError(400, "format", "must be an object", PARAMS)
            body = {k: v for k, v in body.items() if k != PARAMS}
        if type(body) is not dict or len(body) != 1:
            raise RequestError(
                400,
                "format",
                "the body must be a JSON object with exactly one of the keys " + ", ".join(FORMATS),
            )
        ((key, payload),) = body.items()
        layouts = LAYOUTS.get(key)
        if layouts is not None:
            if SPLIT in layouts:
                return self.feed_from_split(payload)
            if COLUMNS in layouts and type(payload) is dict:
                return self.feed_from_columns(payload, key)
            return self.feed_from_records(payload, key)
        raise RequestError(
            400,
            "format",
            f"unknown key {_short(key)!r}: the body must have exactly one of " + ", ".join(FORMATS),
        )

    def feed_from_records(
        self, rows: Any, where: str = "instances"
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Rows as a list of ``{column: value}`` objects."""
        if type(rows) is not list:
            raise RequestError(400, "format", "must be an array of row objects", where)
        n = self._check_count(len(rows), where)
        names = self.name_set
        for i, row in enumerate(rows):
            if type(row) is not dict:
                raise RequestError(
                    422,
                    "type",
                    f"each row must be an object mapping column names to values, "
                    f"got {_type_name(row)}",
                    f"{where}[{i}]",
                )
            if row.keys() != names:
                self._raise_column_error(row.keys(), f"{where}[{i}].{{}}")
        prefix = where + "["
        feed = {}
        for name, onnx_name, convert in self._converters:
            feed[onnx_name] = convert([row[name] for row in rows], prefix)
        return n, feed

    def feed_from_split(self, split: Any) -> tuple[int, dict[str, np.ndarray]]:
        """MLflow's ``dataframe_split``: ``{"columns": [...], "data": [[...], ...]}``."""
        where = "dataframe_split"
        if type(split) is not dict:
            raise RequestError(400, "format", 'must be an object with "columns" and "data"', where)
        unknown = set(split).difference(SPLIT_KEYS)
        if unknown:
            raise RequestError(
                400,
                "format",
                f"unknown key {_short(sorted(map(str, unknown))[0])!r}; "
                'allowed: "columns", "data", "index"',
                where,
            )
        columns, data = split.get("columns"), split.get("data")
        if "index" in split and type(split["index"]) is not list:
            raise RequestError(400, "format", "must be an array", f"{where}.index")
        if type(columns) is not list or not all(type(c) is str for c in columns):
            raise RequestError(
                400, "format", "must be an array of column names", f"{where}.columns"
            )
        if type(data) is not list:
            raise RequestError(400, "format", "must be an array of row arrays", f"{where}.data")
        if len(set(columns)) != len(columns):
            raise RequestError(
                422, "duplicate_column", "column names must be unique", f"{where}.columns"
            )
        if set(columns) != self.name_set:
            self._raise_column_error(columns, f"{where}.columns")
        n = self._check_count(len(data), f"{where}.data")
        width = len(columns)
        for i, row in enumerate(data):
            if type(row) is not list or len(row) != width:
                raise RequestError(
                    422,
                    "row_shape",
                    f"each row must be an array of {width} values in the order of "
                    f'"columns", got {_type_name(row) if type(row) is not list else len(row)}'
                    f"{'' if type(row) is not list else ' values'}",
                    f"{where}.data[{i}]",
                )
        position = {name: j for j, name in enumerate(columns)}
        prefix = f"{where}.data["
        feed = {}
        for name, onnx_name, convert in self._converters:
            j = position[name]
            feed[onnx_name] = convert([row[j] for row in data], prefix)
        return n, feed

    def feed_from_columns(self, columns: Any, where: str) -> tuple[int, dict[str, np.ndarray]]:
        """Columnar ``{column: [values, ...]}`` (MLflow's ``inputs`` as an object)."""
        if columns.keys() != self.name_set:
            self._raise_column_error(columns.keys(), f"{where}.{{}}")
        lengths = set()
        for name in self.names:
            if type(columns[name]) is not list:
                raise RequestError(400, "format", "must be an array of values", f"{where}.{name}")
            lengths.add(len(columns[name]))
        if len(lengths) != 1:
            raise RequestError(
                422, "row_shape", "every column must hold the same number of values", where
            )
        n = self._check_count(lengths.pop(), where)
        feed = {}
        for name, onnx_name, convert in self._converters:
            feed[onnx_name] = convert(list(columns[name]), f"{where}[")  # inputs[3].island
        return n, feed

    # ------------------------------------------------------------------ helpers
    def _check_count(self, n: int, where: str) -> int:
        if n == 0:
            raise RequestError(422, "min_rows", "the batch is empty: send at least one row", where)
        if n > self.max_rows:
            raise RequestError(
                413,
                "max_rows",
                f"the batch has {n} rows; at most {self.max_rows} are accepted per request",
                where,
            )
        return n

    def _raise_column_error(self, keys: Any, field: str) -> None:
        """Name the first missing (else unknown) column; ``{}`` in ``field`` takes its name."""
        present = set(keys)
        missing = [name for name in self.names if name not in present]
        if missing:
            raise RequestError(
                422,
                "required",
                f"column {missing[0]!r} is missing; every row needs: {self._required}",
                field.format(missing[0]),
            )
        extra = sorted(str(k) for k in present - self.name_set)
        name = _short(extra[0])
        raise RequestError(
            422,
            "unknown_column",
            f"column {name!r} is not a model input; the inputs are: {self._required}",
            field.format(name),
        )

    def _numeric_converter(self, rule: Rule):
        name, nullable = rule.name, rule.nullable
        lo, hi, check_range = rule.minimum, rule.maximum, rule.check_range
        column = rule.column
        range_text = f"[{column.min if column.min is not None else '-inf'}, " + (
            f"{column.max if column.max is not None else 'inf'}]"
        )

        def convert(values: list, prefix: str) -> np.ndarray:
            if len(values) > 8 and _NUMBER_TYPES.issuperset(map(type, values)):
                # Batch fast path: all plain numbers; vectorised range (finite bounds, so it
                # refuses inf and nan too).
                try:
                    array = np.array(values, dtype=np.float64)
                except OverflowError:  # an integer beyond float64: the loop names it
                    array = None
                if array is not None and ((array >= lo) & (array <= hi)).all():
                    return array.reshape(-1, 1)
            for i, v in enumerate(values):
                t = type(v)
                if t is float:
                    if v - v != 0.0:  # inf or nan
                        raise RequestError(
                            422, "finite", "must be a finite number", f"{prefix}{i}].{name}"
                        )
                elif t is not int:
                    if v is None:
                        if not nullable:
                            raise RequestError(
                                422, "not_null", "must not be null", f"{prefix}{i}].{name}"
                            )
                        values[i] = _NAN
                        continue
                    raise RequestError(
                        422,
                        "type",
                        f"must be a number, got {_type_name(v)}",
                        f"{prefix}{i}].{name}",
                    )
                if not lo <= v <= hi:
                    if check_range:
                        raise RequestError(
                            422, "range", f"must be within {range_text}", f"{prefix}{i}].{name}"
                        )
                    # An integer beyond float64 (only through the Python API: the HTTP body
                    # parser already reads one as inf).
                    raise RequestError(
                        422, "finite", "must be a finite number", f"{prefix}{i}].{name}"
                    )
            return np.array(values, dtype=np.float64).reshape(-1, 1)

        return convert

    def _categorical_converter(self, rule: Rule):
        name, nullable = rule.name, rule.nullable
        reject = rule.allowed is not None
        allowed = frozenset(rule.allowed or ())
        allowed_text = ", ".join(rule.allowed or ())

        booleans, integers = rule.booleans, rule.integers
        wanted = "a string" + (
            " or a boolean" if booleans else " or an integer" if integers else ""
        )

        def convert(values: list, prefix: str) -> np.ndarray:
            if (
                len(values) > 8
                # Types first: an object or array in the column is unhashable (issuperset).
                and _STR_TYPE.issuperset(map(type, values))
                and (not reject or allowed.issuperset(values))
                and (nullable or MISSING_STRING not in values)
            ):
                return np.array(values, dtype=object).reshape(-1, 1)
            for i, v in enumerate(values):
                if booleans and type(v) is bool:
                    v = values[i] = "True" if v else "False"
                elif integers and (type(v) is int or (type(v) is float and v.is_integer())):
                    v = values[i] = category_text(v)
                if type(v) is str:
                    if v in allowed:
                        continue
                    if v != MISSING_STRING:
                        if reject:
                            raise RequestError(
                                422,
                                "category",
                                f"must be one of: {allowed_text}",
                                f"{prefix}{i}].{name}",
                            )
                        continue
                elif v is not None:
                    raise RequestError(
                        422,
                        "type",
                        f"must be {wanted}, got {_type_name(v)}",
                        f"{prefix}{i}].{name}",
                    )
                # null or "" (the graph's missing string)
                if not nullable:
                    raise RequestError(
                        422, "not_null", "must not be null or empty", f"{prefix}{i}].{name}"
                    )
                values[i] = MISSING_STRING
            return np.array(values, dtype=object).reshape(-1, 1)

        return convert
