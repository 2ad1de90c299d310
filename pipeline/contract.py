"""The data contract: what the raw table must look like, read from a YAML file.

One object answers every "which columns?" question in the project: validation builds its
expectations from it, preprocessing takes its feature lists from it, and export copies its
input description into the model descriptor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model_spec.task import Task
from pipeline.errors import PipelineError

COLUMN_TYPES = ("numeric", "categorical")
ROLES = ("feature", "target", "ignored")
_COLUMN_KEYS = {
    "type",
    "role",
    "max_missing",
    "min",
    "max",
    "categories",
    "max_unknown",
    "leakage_ok",
}
_TABLE_KEYS = {"rows", "columns", "max_duplicates", "leakage_threshold"}

#: Share of rows that may be exact copies of an earlier row when the contract does not say.
DEFAULT_MAX_DUPLICATES = 0.05
#: A feature whose one-feature score reaches this "alone predicts the target" (leakage).
#: Measured on real tables: the highest honest feature was iris' petal width (0.953).
DEFAULT_LEAKAGE_THRESHOLD = 0.98


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    role: str = "feature"
    max_missing: float = 0.0
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    max_unknown: float = 0.0
    leakage_ok: bool = False  # a person decided this feature may predict the target alone

    @property
    def is_numeric(self) -> bool:
        return self.type == "numeric"


@dataclass(frozen=True)
class Contract:
    columns: tuple[ColumnSpec, ...]
    min_rows: int
    max_rows: int | None
    max_duplicates: float = DEFAULT_MAX_DUPLICATES
    leakage_threshold: float = DEFAULT_LEAKAGE_THRESHOLD

    @property
    def target(self) -> str:
        return next(c.name for c in self.columns if c.role == "target")

    @property
    def target_spec(self) -> ColumnSpec:
        return self.column(self.target)

    @property
    def task(self) -> Task:
        """Classification for a categorical target (binary with two categories), regression
        for a numeric one: the contract's target decides, nothing else."""
        spec = self.target_spec
        n = len(spec.categories or ()) if spec.type == "categorical" else None
        return Task.for_target(spec.type, max(n, 2) if n is not None else None)

    @property
    def features(self) -> tuple[ColumnSpec, ...]:
        return tuple(c for c in self.columns if c.role == "feature")

    @property
    def numeric_features(self) -> list[str]:
        return [c.name for c in self.features if c.is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.features if not c.is_numeric]

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.features]

    def column(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The YAML shape, suitable for :func:`dump_contract`."""
        columns: dict[str, Any] = {}
        for c in self.columns:
            entry: dict[str, Any] = {"type": c.type}
            if c.role != "feature":
                entry["role"] = c.role
            if c.categories is not None:
                entry["categories"] = list(c.categories)
            if c.min is not None:
                entry["min"] = c.min
            if c.max is not None:
                entry["max"] = c.max
            entry["max_missing"] = c.max_missing
            if not c.is_numeric and c.role == "feature":
                entry["max_unknown"] = c.max_unknown
            if c.leakage_ok:
                entry["leakage_ok"] = True
            columns[c.name] = entry
        rows: dict[str, Any] = {"min": self.min_rows}
        if self.max_rows is not None:
            rows["max"] = self.max_rows
        out: dict[str, Any] = {"rows": rows, "max_duplicates": self.max_duplicates}
        if self.leakage_threshold != DEFAULT_LEAKAGE_THRESHOLD:
            out["leakage_threshold"] = self.leakage_threshold
        return {**out, "columns": columns}


def min_rows_per_class(test_size: float, val_size: float) -> int:
    """Distinct rows a class needs so the stratified split can give it at least one row in
    each of train, validation and test (``preprocess.test_size``/``val_size`` are shares of
    all rows); never fewer than 3."""
    smallest = min(test_size, val_size, 1.0 - test_size - val_size)
    if smallest <= 0:
        return 3
    return max(3, math.ceil(1.0 / smallest - 1e-9))


def _fail(path: Path, message: str) -> PipelineError:
    return PipelineError(f"data contract '{path}': {message}")


def parse_contract(raw: Any, path: Path = Path("<contract>")) -> Contract:
    """Check and convert the YAML structure of a contract."""
    if not isinstance(raw, dict) or not isinstance(raw.get("columns"), dict) or not raw["columns"]:
        raise _fail(path, "needs a non-empty 'columns' mapping.")
    unknown_table = set(raw) - _TABLE_KEYS
    if unknown_table:
        raise _fail(path, f"unknown top-level key(s): {', '.join(sorted(unknown_table))}.")
    columns = []
    for name, entry in raw["columns"].items():
        if not isinstance(entry, dict):
            raise _fail(path, f"column '{name}' must be a mapping.")
        unknown = set(entry) - _COLUMN_KEYS
        if unknown:
            raise _fail(path, f"column '{name}' has unknown key(s): {', '.join(sorted(unknown))}.")
        if entry.get("type") not in COLUMN_TYPES:
            raise _fail(path, f"column '{name}' needs type: numeric or categorical.")
        role = entry.get("role", "feature")
        if role not in ROLES:
            raise _fail(path, f"column '{name}' has role '{role}'; expected one of {ROLES}.")
        categories = entry.get("categories")
        if entry["type"] == "categorical" and role != "ignored" and not categories:
            raise _fail(path, f"categorical column '{name}' needs a list of 'categories'.")
        columns.append(
            ColumnSpec(
                name=str(name),
                type=entry["type"],
                role=role,
                max_missing=float(entry.get("max_missing", 0.0)),
                min=None if entry.get("min") is None else float(entry["min"]),
                max=None if entry.get("max") is None else float(entry["max"]),
                categories=None if categories is None else tuple(str(c) for c in categories),
                max_unknown=float(entry.get("max_unknown", 0.0)),
                leakage_ok=_flag(path, name, entry.get("leakage_ok", False)),
            )
        )
    targets = [c.name for c in columns if c.role == "target"]
    if len(targets) != 1:
        raise _fail(path, f"exactly one column needs role: target, found {len(targets)}.")
    if not any(c.role == "feature" for c in columns):
        raise _fail(path, "no feature columns.")
    rows = raw.get("rows") or {}
    return Contract(
        columns=tuple(columns),
        min_rows=int(rows.get("min", 1)),
        max_rows=None if rows.get("max") is None else int(rows["max"]),
        max_duplicates=_share(path, "max_duplicates", raw, DEFAULT_MAX_DUPLICATES),
        leakage_threshold=_share(path, "leakage_threshold", raw, DEFAULT_LEAKAGE_THRESHOLD),
    )


def _share(path: Path, key: str, raw: dict[str, Any], default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _fail(path, f"'{key}' must be a number from 0 to 1, got {value!r}.")
    return float(value)


def _flag(path: Path, column: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, f"column '{column}': leakage_ok must be true or false, got {value!r}.")
    return value


def load_contract(path: str | Path) -> Contract:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"data contract '{path}' does not exist.") from None
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML: {exc}") from None
    return parse_contract(raw, path)


def dump_contract(contract: Contract) -> str:
    return yaml.safe_dump(contract.to_dict(), sort_keys=False)
