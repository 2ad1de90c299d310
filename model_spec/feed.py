"""Raw column values to the ONNX graph's input arrays: the one place this conversion lives.

Every reader that runs an exported graph (export's parity check, the gate, the benchmarks,
the server after validation) builds its feed here: one ``[N, 1]`` array per input, under the
input's ``onnx_name``; numeric columns ``float64`` with ``NaN`` for missing, categorical
columns ``object`` strings with ``""`` for missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model_spec.descriptor import InputSpec, ModelDescriptor


class FeedError(ValueError):
    """A column is absent or holds a value its kind cannot take; the message names it."""


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):
        # pandas.NA (a nullable Int64/boolean/string column's missing value): ``NA != NA`` is
        # NA, whose truth is ambiguous. Named, not imported: the server has no pandas.
        return type(value).__name__ == "NAType"


def numeric_array(values: Any, column: str) -> np.ndarray:
    """``float64`` ``[N, 1]``; ``None``/NaN become NaN."""
    array = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(array.shape[0], dtype=np.float64)
    for i, value in enumerate(array):
        if _is_missing(value):
            out[i] = math.nan
            continue
        if isinstance(value, bool | np.bool_ | str):
            raise FeedError(f"column '{column}' is numeric; row {i} holds {value!r}")
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise FeedError(f"column '{column}' is numeric; row {i} holds {value!r}") from None
    return out.reshape(-1, 1)


def category_text(value: Any) -> str:
    """A category's text: ``str(value)``, but an integral float as an integer (``1.0`` ->
    ``"1"``), as training wrote it (pandas reads an integer code column with a gap as floats)."""
    if isinstance(value, float | np.floating) and abs(value) < 2**53 and value == int(value):
        return str(int(value))
    return str(value)


def categorical_array(values: Any) -> np.ndarray:
    """``object`` strings ``[N, 1]`` (see :func:`category_text`); missing values become ``""``."""
    array = np.asarray(values, dtype=object).reshape(-1)
    out = np.array(["" if _is_missing(v) else category_text(v) for v in array], dtype=object)
    return out.reshape(-1, 1)


def column_feed(spec: InputSpec, values: Any) -> np.ndarray:
    if spec.is_numeric:
        try:
            return np.asarray(values, dtype=np.float64).reshape(-1, 1)
        except (TypeError, ValueError):
            return numeric_array(values, spec.name)
    return categorical_array(values)


def build_feed(
    descriptor: ModelDescriptor | Sequence[InputSpec], columns: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """The feed for ``columns`` (original column name -> values: a list, a numpy array or a
    pandas Series). Extra columns are ignored; a missing one raises :class:`FeedError`."""
    inputs = descriptor.inputs if isinstance(descriptor, ModelDescriptor) else descriptor
    absent = [spec.name for spec in inputs if spec.name not in columns]
    if absent:
        raise FeedError("missing input column(s): " + ", ".join(repr(n) for n in absent))
    return {spec.onnx_name: column_feed(spec, _values(columns[spec.name])) for spec in inputs}


def _values(column: Any) -> Any:
    # pandas Series / Index: take the underlying values without importing pandas here.
    to_numpy = getattr(column, "to_numpy", None)
    if callable(to_numpy):
        try:
            return to_numpy(dtype=object)
        except TypeError:
            return to_numpy()
    return column
