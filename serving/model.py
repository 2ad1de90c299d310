"""Loading an exported model: descriptor, ONNX Runtime session, golden self-check.

A model directory follows the export contract in ``docs/architecture.md``: ``model.onnx``,
``model.json`` (the descriptor) and ``golden.json``. A registered MLflow model may carry the
descriptor and golden file in ``extra_files/`` next to an ONNX flavour's ``model.onnx``;
:func:`locate_model_files` finds both layouts. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_spec.descriptor import (
    DESCRIPTOR_FILE,
    GOLDEN_FILE,
    LABEL,
    PREDICTION,
    PROBABILITIES,
    DescriptorError,
    ModelDescriptor,
    outputs_for,
)
from model_spec.task import Task
from serving.config import REJECT, ServingConfig
from serving.schema import Column, InputSchema, RequestError

_ORT_TYPES = {"numeric": "tensor(double)", "categorical": "tensor(string)"}
#: Graph outputs the server reads, by name (defined in model_spec.descriptor).
OUTPUTS = (LABEL, PROBABILITIES, PREDICTION)


class ModelError(Exception):
    """The model cannot be served; the message says which file and what is wrong."""

    step = "load"


class GoldenMismatch(ModelError):
    """The model loads but does not reproduce its golden examples."""

    step = "golden"


@dataclass(frozen=True)
class ModelFiles:
    onnx: Path
    descriptor: Path
    golden: Path


def locate_model_files(root: Path) -> ModelFiles:
    """Find ``model.json``, the ONNX file it names and ``golden.json`` under ``root``.

    Looks at ``root`` itself, then ``root/extra_files`` (``mlflow.onnx.log_model(extra_files=
    ...)``), then anywhere below; the ONNX file is next to the descriptor or at ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ModelError(f"model directory '{root}' does not exist")
    candidates = [root / DESCRIPTOR_FILE, root / "extra_files" / DESCRIPTOR_FILE]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        found = next(iter(sorted(root.rglob(DESCRIPTOR_FILE))), None)
    if found is None:
        raise ModelError(
            f"no model.json under '{root}': a served model needs the export directory "
            "(model.onnx, model.json, golden.json)"
        )
    descriptor = _read_json(found)
    onnx_name = (descriptor.get("onnx") or {}).get("file", "model.onnx")
    onnx = next((p for p in (found.parent / onnx_name, root / onnx_name) if p.is_file()), None)
    if onnx is None:
        raise ModelError(f"'{found}' names ONNX file '{onnx_name}', which is not in '{root}'")
    golden = next(
        (p for p in (found.parent / GOLDEN_FILE, root / GOLDEN_FILE) if p.is_file()), None
    )
    if golden is None:
        raise ModelError(f"no golden.json next to '{found}': the model cannot check itself")
    return ModelFiles(onnx=onnx, descriptor=found, golden=golden)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read '{path}': {exc}") from None
    if not isinstance(payload, dict):
        raise ModelError(f"'{path}' must hold a JSON object")
    return payload


@dataclass
class LoadedModel:
    """One model version, ready to predict. Immutable once built; swapped as a whole."""

    name: str
    version: str
    source: str
    descriptor: ModelDescriptor
    classes: tuple[str, ...]
    schema: InputSchema
    session: Any
    output_names: list[str]
    load_seconds: float
    golden_rows: int
    model_block: dict[str, str] = field(default_factory=dict)
    #: Metrics value index of each class, filled in when the model is installed.
    class_index: dict[str, int] = field(default_factory=dict)
    #: Metrics value index of the prediction-value histogram (regression), when installed.
    value_index: int = -1
    #: (column name, graph input name, numeric?) per input: what the prediction log records.
    log_columns: tuple[tuple[str, str, bool], ...] = ()

    @property
    def task(self) -> Task:
        return self.descriptor.task

    def predict(self, feed: dict[str, np.ndarray]) -> tuple[list[str], list[list[float]]]:
        """Classification: the label and the class probabilities of each row."""
        labels, probabilities = self.session.run(self.output_names, feed)
        _require_finite(probabilities)
        return labels.reshape(-1).tolist(), probabilities.tolist()

    def predict_values(self, feed: dict[str, np.ndarray]) -> list[float]:
        """Regression: the predicted value of each row."""
        (values,) = self.session.run(self.output_names, feed)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        _require_finite(values)
        return values.tolist()

    def outputs(self, feed: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """One output per row as the prediction log records it: ``{"label", "probabilities"}``
        (classification) or ``{"value"}`` (regression)."""
        if self.task.is_regression:
            return [{"value": v} for v in self.predict_values(feed)]
        classes = self.classes
        labels, probabilities = self.predict(feed)
        return [
            {"label": label, "probabilities": dict(zip(classes, probs, strict=False))}
            for label, probs in zip(labels, probabilities, strict=False)
        ]


def _require_finite(outputs: np.ndarray) -> None:
    """Refuse outputs that are not numbers: an input far beyond what the model was trained
    on (``1e308`` under ``SERVING_OUT_OF_RANGE=accept``) overflows the graph's float32 and gave
    null probabilities with a label, or a null value."""
    finite = np.isfinite(outputs)
    if not finite.all():
        row = int(np.flatnonzero(~finite.reshape(len(outputs), -1).all(axis=1))[0])
        raise RequestError(
            422,
            "model_output",
            f"the model's output for row {row} is not a number: an input is too far outside "
            "what the model was trained on (its graph computes in float32)",
        )


def load_model(
    directory: Path,
    config: ServingConfig,
    *,
    version: str | None = None,
    source: str = "directory",
) -> LoadedModel:
    """Load and self-check the model in ``directory``; raise :class:`ModelError` if unfit."""
    import onnxruntime as ort

    started = time.perf_counter()
    files = locate_model_files(directory)
    descriptor = _read_descriptor(files.descriptor)
    columns = [Column.from_spec(spec) for spec in descriptor.inputs]
    classes = descriptor.classes
    outputs = list(descriptor.onnx.outputs)

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.ort_intra_op_threads
    options.inter_op_num_threads = config.ort_inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn CPU the other worker needs; only matters with >1 thread.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(files.onnx), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"ONNX Runtime cannot load '{files.onnx}': {exc}") from None
    _check_graph(session, columns, outputs, files.onnx)

    schema = InputSchema(
        columns,
        max_rows=config.max_rows,
        reject_unknown_categories=config.unknown_categories == REJECT,
        reject_out_of_range=config.out_of_range == REJECT,
    )
    model = LoadedModel(
        name=descriptor.name,
        version=version or config.model_version or "sha256:" + _sha256(files.onnx)[:12],
        source=source,
        descriptor=descriptor,
        classes=classes,
        schema=schema,
        session=session,
        output_names=outputs,
        load_seconds=0.0,
        golden_rows=0,
    )
    model.log_columns = tuple((c.name, c.onnx_name, c.kind == "numeric") for c in columns)
    model.golden_rows = check_golden(model, files.golden)
    model.load_seconds = time.perf_counter() - started
    model.model_block = {"name": model.name, "version": model.version}
    return model


def _read_descriptor(path: Path) -> ModelDescriptor:
    try:
        descriptor = ModelDescriptor.read(path)
    except DescriptorError as exc:
        raise ModelError(f"'{path}': {exc}") from None
    if not descriptor.inputs:
        raise ModelError(f"'{path}' lists no inputs")
    if list(descriptor.onnx.outputs) != outputs_for(descriptor.task):
        raise ModelError(
            f"'{path}': a {descriptor.task.value} model has outputs "
            f"{outputs_for(descriptor.task)}, not {list(descriptor.onnx.outputs)}"
        )
    return descriptor


def _check_graph(session: Any, columns: list[Column], outputs: list[str], path: Path) -> None:
    graph_inputs = {i.name: i.type for i in session.get_inputs()}
    for column in columns:
        expected = _ORT_TYPES[column.kind]
        actual = graph_inputs.pop(column.onnx_name, None)
        if actual is None:
            raise ModelError(
                f"'{path}' has no input named {column.onnx_name!r} (the descriptor's "
                f"onnx_name of column {column.name!r})"
            )
        if actual != expected:
            raise ModelError(
                f"'{path}': input {column.onnx_name!r} is {actual}, the descriptor implies "
                f"{expected}"
            )
    if graph_inputs:
        raise ModelError(f"'{path}' has inputs the descriptor lacks: {sorted(graph_inputs)}")
    names = {o.name for o in session.get_outputs()}
    if not set(outputs) <= names:
        raise ModelError(f"'{path}' lacks output(s) {sorted(set(outputs) - names)}")


def check_golden(model: LoadedModel, path: Path) -> int:
    """Run the golden rows through ``model``; raise :class:`ModelError` on any mismatch.

    The rows are checked as the model sees them (unknown categories and out-of-range values
    included), so the check does not depend on the server's request policies.
    """
    golden = _read_json(path)
    rows = golden.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ModelError(f"'{path}' has no golden rows")
    tolerance = float(golden.get("tolerance", 1e-5))
    lenient = InputSchema(
        model.schema.columns,
        max_rows=max(len(rows), 1),
        reject_unknown_categories=False,
        reject_out_of_range=False,
    )
    try:
        _, feed = lenient.feed_from_records([dict(row["inputs"]) for row in rows], "golden")
        if model.task.is_regression:
            values = model.predict_values(feed)
            _check_golden_values(rows, values, tolerance, path)
            return len(rows)
        labels, probabilities = model.predict(feed)
    except GoldenMismatch:
        raise
    except RequestError as exc:
        raise ModelError(f"'{path}': golden input {exc.field}: {exc.message}") from None
    except (KeyError, TypeError) as exc:
        raise ModelError(f"'{path}' is malformed: {exc}") from None
    except Exception as exc:  # onnxruntime errors
        raise ModelError(f"the model failed on the golden rows of '{path}': {exc}") from None
    for i, (row, label, probs) in enumerate(zip(rows, labels, probabilities, strict=True)):
        if label != row.get("label"):
            raise GoldenMismatch(
                f"golden row {i}: label {label!r}, expected {row.get('label')!r} ('{path}')"
            )
        expected = row.get("probabilities")
        if expected is not None:
            diff = float(np.max(np.abs(np.asarray(probs) - np.asarray(expected, dtype=float))))
            if not diff <= tolerance:
                raise GoldenMismatch(
                    f"golden row {i}: probabilities differ by {diff:.3g} "
                    f"(tolerance {tolerance:g}) ('{path}')"
                )
    return len(rows)


def _check_golden_values(rows: list, values: list[float], tolerance: float, path: Path) -> None:
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        expected = row.get(PREDICTION, row.get("value"))
        if expected is None:
            raise ModelError(f"'{path}' golden row {i} has no expected {PREDICTION!r}")
        # Relative for large targets, absolute near zero (float32 graphs).
        allowed = tolerance * max(1.0, abs(float(expected)))
        if not abs(value - float(expected)) <= allowed:
            raise GoldenMismatch(
                f"golden row {i}: prediction {value:.6g}, expected {float(expected):.6g} "
                f"(tolerance {tolerance:g}) ('{path}')"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelHolder:
    """The model a process serves. Readers take ``holder.model`` once per request; a reload
    replaces it with one assignment, so a request never sees half of two versions."""

    def __init__(self) -> None:
        self.model: LoadedModel | None = None
        self.error: str | None = "no model loaded yet"
        self.lock = threading.Lock()  # serialises writers (reloads), never readers

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        with self.lock:
            old, self.model, self.error = self.model, model, None
        return old
