"""Real tables that ship inside installed packages, and data contracts for them.

* Palmer Penguins (``palmerpenguins``): multiclass, numeric and categorical features, gaps;
* breast cancer (scikit-learn): binary, 30 numeric features named like ``mean radius``;
* wine (scikit-learn): multiclass, a feature named ``od280/od315_of_diluted_wines``;
* diabetes (scikit-learn): regression, numeric target ``target`` (disease progression).

Nothing is downloaded: scikit-learn's bundled datasets are files inside the package.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.contract import Contract, parse_contract


def breast_cancer() -> pd.DataFrame:
    """569 rows; target ``diagnosis`` with classes ``malignant`` / ``benign``."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["diagnosis"] = data.target.map(dict(enumerate(data.target_names))).astype(str)
    return frame


def wine() -> pd.DataFrame:
    """178 rows; target ``cultivar`` (three classes)."""
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["cultivar"] = data.target.map(lambda i: f"cultivar_{i}").astype(str)
    return frame


def diabetes() -> pd.DataFrame:
    """442 rows; numeric target ``progression`` (scaled features, as scikit-learn ships them)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True)
    return data.frame.rename(columns={"target": "progression"})


def contract_dict(frame: pd.DataFrame, target: str) -> dict[str, Any]:
    """A contract (YAML shape) for ``frame``: object columns categorical, the rest numeric,
    ranges widened by the spread so unseen rows of the same table pass."""
    columns: dict[str, Any] = {}
    for name in frame.columns:
        series = frame[name]
        entry: dict[str, Any]
        if not pd.api.types.is_numeric_dtype(series):
            entry = {
                "type": "categorical",
                "categories": sorted(series.dropna().astype(str).unique()),
            }
            if name != target:
                entry["max_unknown"] = 0.0
        else:
            low, high = float(series.min()), float(series.max())
            pad = (high - low) or 1.0
            entry = {"type": "numeric", "min": low - pad, "max": high + pad}
        entry["max_missing"] = 0.0 if name == target else float(series.isna().mean() > 0) * 0.5
        if name == target:
            entry["role"] = "target"
        columns[str(name)] = entry
    return {"rows": {"min": 10}, "columns": columns}


def contract_for(frame: pd.DataFrame, target: str) -> Contract:
    return parse_contract(contract_dict(frame, target))
