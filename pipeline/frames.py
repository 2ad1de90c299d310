"""Raw rows -> the model's input frame: shared by preprocess, train, evaluate and export."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.contract import Contract
from pipeline.errors import PipelineError

#: How a missing categorical value reaches the model (ONNX string tensors cannot hold NaN).
MISSING_CATEGORY = ""


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
        column = frame[name].astype(object)
        values = np.where(column.isna(), MISSING_CATEGORY, column.astype(str))
        out[name] = pd.Series(values, index=frame.index, dtype=object)
    # pandas 3 would infer its own string dtype; object arrays are what sklearn and ONNX expect.
    return pd.DataFrame(out, index=frame.index)[contract.feature_names].astype(
        {name: object for name in contract.categorical_features}
    )
