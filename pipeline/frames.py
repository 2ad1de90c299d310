"""Raw rows -> the model's input frame: shared by preprocess, train, evaluate and export."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_spec.feed import category_text as feed_category_text
from pipeline.contract import Contract
from pipeline.errors import PipelineError

#: How a missing categorical value reaches the model (ONNX string tensors cannot hold NaN).
MISSING_CATEGORY = ""


def category_text(column: pd.Series) -> pd.Series:
    """A categorical column's values as the text its categories are written in, missing
    values left missing (NaN).

    ``str(value)``, except that an integral float is written as an integer (``1.0`` -> ``"1"``):
    pandas reads an integer-coded column that has a missing value as floats, while the
    contract, a request and the other rows name the code ``1``. Every place that turns a
    categorical column (feature or target) into text goes through here, so validation,
    training, evaluation and the gate see the same categories.
    """
    if pd.api.types.is_float_dtype(column):
        x = column.to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(x)
        with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not whole, as wanted
            whole = ~missing & (np.abs(x) < 2**53) & (np.mod(x, 1) == 0)
        text = np.where(missing, "", x.astype(str)).astype(object)
        text[whole] = x[whole].astype(np.int64).astype(str)
        text[missing] = np.nan
        return pd.Series(text, index=column.index, dtype=object)
    values = column.astype(object)
    return values.where(values.isna(), values.map(category_label))


#: One category's text (see :func:`category_text`); the ONNX feed writes it the same way.
category_label = feed_category_text


def to_model_frame(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Select the feature columns of raw rows and give them the model's input types.

    Numeric features become float64 (missing = NaN); categorical features become ``object``
    strings with missing values as ``""``.
    """
    missing = [c for c in contract.feature_names if c not in frame.columns]
    if missing:
        raise PipelineError(f"input is missing feature column(s): {', '.join(missing)}.")
    out = {}
    for name in contract.numeric_features:
        out[name] = pd.to_numeric(frame[name], errors="raise").astype("float64").to_numpy()
    for name in contract.categorical_features:
        column = category_text(frame[name])
        values = np.where(column.isna(), MISSING_CATEGORY, column)
        out[name] = pd.Series(values, index=frame.index, dtype=object)
    # pandas 3 would infer its own string dtype; object arrays are what sklearn and ONNX expect.
    return pd.DataFrame(out, index=frame.index)[contract.feature_names].astype(
        {name: object for name in contract.categorical_features}
    )
