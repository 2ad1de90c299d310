"""The model descriptor, ``model.json``: one typed class, written by export, read by everyone.

Layout of an export directory (see docs/architecture.md)::

    model.onnx     the graph: one input per raw feature column, outputs per task (below)
    model.json     this descriptor
    golden.json    rows with their expected outputs, so any runtime can check itself

Graph outputs by task:

* classification: ``label`` ``tensor(string)[N]`` and ``probabilities`` ``tensor(float)[N, C]``,
  columns in ``classes`` order;
* regression: ``prediction`` ``tensor(float)[N, 1]``.

ONNX input names. A column may be called anything a CSV or Parquet file can hold
(``mean radius``, ``od280/od315``, ``île``). The graph's input for the column is
:func:`onnx_input_names` of the column list: every character outside ``[A-Za-z0-9_]`` becomes
``_``, a name that would start with a digit (or be empty) gets an ``f_`` prefix, and a name
that collides with an earlier one gets ``_2``, ``_3``, ... The mapping is stored per input
(``onnx_name``), so readers never recompute it, and requests to the server use the original
column names.

No third-party imports: the serving image uses this module as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model_spec.task import Task

#: File names of an export directory, defined here only.
DESCRIPTOR_FILE = "model.json"
GOLDEN_FILE = "golden.json"
ONNX_FILE = "model.onnx"
#: Version of this layout; a reader refuses a descriptor it does not know.
SCHEMA_VERSION = 2

#: Graph output names.
LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"

NUMERIC = "numeric"
CATEGORICAL = "categorical"


class DescriptorError(ValueError):
    """``model.json`` is missing, unreadable or not a descriptor this code understands."""


_UNSAFE = re.compile(r"[^A-Za-z0-9_]")

#: Tensor names the exported graph uses for its own outputs (``pipeline/onnx_export.py``
#: builds them after the inputs are named): an input may not take one.
RESERVED_NAMES = frozenset(
    {
        LABEL,
        PROBABILITIES,
        PREDICTION,
        "class_labels",
        "class_index",
        "proba_float",
        "prediction_shape",
        "prediction_column",
    }
)


def onnx_input_names(columns: Sequence[str]) -> list[str]:
    """The ONNX input name of each column, in order (the mapping the module docstring states)."""
    taken: set[str] = set()
    names = []
    for column in columns:
        base = _UNSAFE.sub("_", str(column))
        if not base or base[0].isdigit() or base in RESERVED_NAMES:
            base = "f_" + base
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names.append(name)
    return names


def outputs_for(task: Task) -> list[str]:
    """Graph output names of a model of ``task``."""
    return [PREDICTION] if task.is_regression else [LABEL, PROBABILITIES]


@dataclass(frozen=True)
class InputSpec:
    """One raw feature column: what the server accepts and how it reaches the graph."""

    name: str
    onnx_name: str
    kind: str  # NUMERIC | CATEGORICAL
    nullable: bool
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()

    @property
    def is_numeric(self) -> bool:
        return self.kind == NUMERIC

    @property
    def dtype(self) -> str:
        """The graph input's element type: float64 for numbers, string for categories."""
        return "float64" if self.is_numeric else "string"

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "onnx_name": self.onnx_name,
            "kind": self.kind,
            "dtype": self.dtype,
            "nullable": self.nullable,
        }
        if self.is_numeric:
            entry["min"], entry["max"] = self.min, self.max
        else:
            entry["categories"] = list(self.categories)
        return entry

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InputSpec:
        kind = raw.get("kind")
        if kind not in (NUMERIC, CATEGORICAL):
            raise DescriptorError(f"input {raw.get('name')!r}: unknown kind {kind!r}")
        return cls(
            name=str(raw["name"]),
            onnx_name=str(raw.get("onnx_name") or raw["name"]),
            kind=kind,
            nullable=bool(raw.get("nullable", False)),
            min=None if raw.get("min") is None else float(raw["min"]),
            max=None if raw.get("max") is None else float(raw["max"]),
            categories=tuple(str(c) for c in raw.get("categories") or ()),
        )


@dataclass(frozen=True)
class OnnxSpec:
    file: str = ONNX_FILE
    opset: int = 17
    outputs: tuple[str, ...] = (LABEL, PROBABILITIES)


@dataclass(frozen=True)
class SavedModelSpec:
    dir: str
    signature: str = "serving_default"


@dataclass(frozen=True)
class Parity:
    passed: bool
    max_abs_diff: float
    tolerance: float


@dataclass(frozen=True)
class Lineage:
    run_id: str | None = None
    git_commit: str | None = None
    data_sha256: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelDescriptor:
    """``model.json``. Build it with the constructor, write with :meth:`write`, read with
    :meth:`read` (which refuses what it does not understand with a :class:`DescriptorError`)."""

    name: str
    task: Task
    estimator: str
    family: str
    target: str
    inputs: tuple[InputSpec, ...]
    onnx: OnnxSpec
    classes: tuple[str, ...] = ()
    saved_model: SavedModelSpec | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    parity: Parity | None = None
    lineage: Lineage = field(default_factory=Lineage)
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ questions readers ask
    @property
    def input_names(self) -> list[str]:
        """Original column names, in graph input order."""
        return [i.name for i in self.inputs]

    @property
    def onnx_inputs(self) -> list[str]:
        return [i.onnx_name for i in self.inputs]

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "task": self.task.value,
            "estimator": self.estimator,
            "family": self.family,
            "target": self.target,
            "classes": list(self.classes),
            "inputs": [i.to_dict() for i in self.inputs],
            "onnx": {
                "file": self.onnx.file,
                "opset": self.onnx.opset,
                "inputs": self.onnx_inputs,
                "outputs": list(self.onnx.outputs),
            },
            "saved_model": asdict(self.saved_model) if self.saved_model else None,
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "parity": asdict(self.parity) if self.parity else None,
            "lineage": {
                "run_id": self.lineage.run_id,
                "git_commit": self.lineage.git_commit,
                "data_sha256": self.lineage.data_sha256,
                "params": dict(self.lineage.params),
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, raw: Any) -> ModelDescriptor:
        if not isinstance(raw, Mapping):
            raise DescriptorError("a model descriptor must be a JSON object")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DescriptorError(
                f"descriptor schema_version {version!r} is not {SCHEMA_VERSION}: "
                "re-export the model with this version of the pipeline"
            )
        try:
            task = Task.parse(str(raw["task"]))
            onnx = raw.get("onnx") or {}
            saved = raw.get("saved_model")
            parity = raw.get("parity")
            lineage = raw.get("lineage") or {}
            descriptor = cls(
                name=str(raw["name"]),
                task=task,
                estimator=str(raw["estimator"]),
                family=str(raw["family"]),
                target=str(raw["target"]),
                classes=tuple(str(c) for c in raw.get("classes") or ()),
                inputs=tuple(InputSpec.from_dict(i) for i in raw["inputs"]),
                onnx=OnnxSpec(
                    file=str(onnx.get("file", ONNX_FILE)),
                    opset=int(onnx.get("opset", 17)),
                    outputs=tuple(onnx.get("outputs") or outputs_for(task)),
                ),
                saved_model=SavedModelSpec(**saved) if saved else None,
                metrics={str(k): float(v) for k, v in (raw.get("metrics") or {}).items()},
                parity=Parity(**parity) if parity else None,
                lineage=Lineage(
                    run_id=lineage.get("run_id"),
                    git_commit=lineage.get("git_commit"),
                    data_sha256=lineage.get("data_sha256"),
                    params=dict(lineage.get("params") or {}),
                ),
            )
        except DescriptorError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DescriptorError(
                f"not a valid model descriptor: {type(exc).__name__}: {exc}"
            ) from None
        if task.is_classification and len(descriptor.classes) < 2:
            raise DescriptorError(f"a {task.value} descriptor needs at least two classes")
        return descriptor

    @classmethod
    def read(cls, path: str | Path) -> ModelDescriptor:
        """Read ``path`` (a ``model.json`` or the directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / DESCRIPTOR_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DescriptorError(f"'{path}' does not exist") from None
        except (OSError, ValueError) as exc:
            raise DescriptorError(f"cannot read '{path}': {exc}") from None
        return cls.from_dict(raw)

    def write(self, directory: str | Path) -> Path:
        """Write ``model.json`` into ``directory``; returns its path."""
        path = Path(directory) / DESCRIPTOR_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def comparability(
    candidate: ModelDescriptor, champion: ModelDescriptor, role: str = "candidate"
) -> str | None:
    """Why ``champion`` and ``candidate`` are not the same kind of model (another task, other
    inputs, other classes), or None when they are. The gate compares only such models; the
    server serves a challenger (``role``) beside its champion only when they are."""
    if champion.task != candidate.task:
        return f"it is a {champion.task.value} model and this {role} is {candidate.task.value}"
    theirs = {i.name: i.kind for i in champion.inputs}
    ours = {i.name: i.kind for i in candidate.inputs}
    if theirs != ours:
        parts = []
        only_theirs = [n for n in theirs if n not in ours]
        only_ours = [n for n in ours if n not in theirs]
        kinds = [n for n in ours if n in theirs and ours[n] != theirs[n]]
        if only_theirs:
            parts.append("only the champion has " + _names(only_theirs))
        if only_ours:
            parts.append(f"only the {role} has " + _names(only_ours))
        if kinds:
            parts.append("the kind differs for " + _names(kinds))
        return "its inputs differ (" + "; ".join(parts) + ")"
    if candidate.task.is_classification and set(champion.classes) != set(candidate.classes):
        return (
            f"its classes are {_names(champion.classes)}, the {role}'s {_names(candidate.classes)}"
        )
    return None


def _names(names, limit: int = 4) -> str:
    names = list(names)
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
