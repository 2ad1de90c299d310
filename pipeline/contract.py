"""The data contract: what the raw table must look like, read from a YAML file.

One object answers every "which columns?" question in the project: validation builds its
expectations from it, preprocessing takes its feature lists from it, and export copies its
input description into the model descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model_spec.task import Task
from pipeline.errors import PipelineError

COLUMN_TYPES = ("numeric", "categorical")
ROLES = ("feature", "target", "ignored")
_COLUMN_KEYS = {"type", "role", "max_missing", "min", "max", "categories", "max_unknown"}


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

    @property
    def is_numeric(self) -> bool:
        return self.type == "numeric"


@dataclass(frozen=True)
class Contract:
    columns: tuple[ColumnSpec, ...]
    min_rows: int
    max_rows: int | None

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
            columns[c.name] = entry
        rows: dict[str, Any] = {"min": self.min_rows}
        if self.max_rows is not None:
            rows["max"] = self.max_rows
        return {"rows": rows, "columns": columns}


def _fail(path: Path, message: str) -> PipelineError:
    return PipelineError(f"data contract '{path}': {message}")


def parse_contract(raw: Any, path: Path = Path("<contract>")) -> Contract:
    """Check and convert the YAML structure of a contract."""
    if not isinstance(raw, dict) or not isinstance(raw.get("columns"), dict) or not raw["columns"]:
        raise _fail(path, "needs a non-empty 'columns' mapping.")
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
    )


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
