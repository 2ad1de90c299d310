"""``export``: package the trained model for serving and prove the packages compute the same thing.

Writes ``models/export/`` (all or nothing):

* ``model.onnx``: one graph from the raw named feature columns to ``label`` and
  ``probabilities`` (see :mod:`pipeline.onnx_export`), for both model families;
* ``saved_model/``: a TensorFlow SavedModel with the same raw inputs (Keras family only,
  see :mod:`pipeline.tf_export`);
* ``model.json``: the descriptor the server and the gate read (docs/architecture.md);
* ``golden.json``: a few rows with their expected outputs, so any runtime can check itself;
* ``model_card.md``.

The parity check runs the native model, ONNX Runtime and (Keras) TensorFlow on the whole test
split and on the golden rows: every row must get the same label and no probability may differ
by more than ``export.parity_tolerance``. The result goes to the parity report; when it fails
the stage stops, names the runtime, the worst row and the difference, and leaves the previous
``models/export`` untouched.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd

from model_spec import descriptor as spec
from model_spec.descriptor import (
    DESCRIPTOR_FILE,
    GOLDEN_FILE,
    ONNX_FILE,
    InputSpec,
    ModelDescriptor,
    OnnxSpec,
    SavedModelSpec,
    outputs_for,
)
from model_spec.feed import build_feed
from model_spec.task import Task
from pipeline import onnx_export
from pipeline.config import Params, flatten, load_params
from pipeline.contract import Contract, load_contract
from pipeline.errors import PipelineError, cli
from pipeline.frames import category_label, category_text
from pipeline.io import (
    atomic_path,
    file_sha256,
    invalidate_gate_report,
    read_json,
    read_table,
    write_json,
)
from pipeline.registry import model_name

SAVED_MODEL_DIR = "saved_model"
CARD_FILE = "model_card.md"
#: A category no contract is expected to list; the golden rows use it for "unseen".
UNSEEN_CATEGORY = "__unseen__"
#: The test metrics the descriptor must carry, per task (evaluate writes them).
REQUIRED_METRICS = {
    Task.BINARY: ("accuracy", "f1_macro", "roc_auc_ovr", "log_loss"),
    Task.MULTICLASS: ("accuracy", "f1_macro", "roc_auc_ovr", "log_loss"),
    Task.REGRESSION: ("rmse", "mae", "r2"),
}
#: The params blocks that decide what the exported model computes. Gate, registry and MLflow
#: settings do not, and DVC does not rerun this stage when they change.
LINEAGE_BLOCKS = ("data", "preprocess", "train", "export")


class ParityError(PipelineError):
    """The exported artifacts do not reproduce the native model; carries the parity report."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Outputs:
    """What a runtime returned for a batch of rows: labels and probabilities ``[N, C]``
    (classification) or predictions ``[N]`` (regression, ``labels`` None)."""

    labels: np.ndarray | None  # str [N]
    probabilities: np.ndarray | None = None  # [N, C]
    predictions: np.ndarray | None = None  # [N]

    @property
    def rows(self) -> int:
        values = self.predictions if self.probabilities is None else self.probabilities
        return int(len(values))


Lineage = spec.Lineage


@dataclass(frozen=True)
class ExportResult:
    descriptor: ModelDescriptor
    parity: dict[str, Any]
    golden: dict[str, Any]


def lineage_params(params: Params) -> dict[str, Any]:
    """The flattened params that produced the model (see :data:`LINEAGE_BLOCKS`)."""
    return {k: v for k, v in flatten(params).items() if k.split(".")[0] in LINEAGE_BLOCKS}


# ---------------------------------------------------------------------------- parity
def compare_predictions(native: Outputs, runtime: Outputs, tolerance: float) -> dict[str, Any]:
    """Regression: the largest disagreement of one runtime's predictions, relative to
    ``max(1, |native|)`` (:func:`pipeline.estimators.parity_error`), and where."""
    from model_spec.task import Task
    from pipeline.estimators import parity_error

    error = parity_error(Task.REGRESSION, native.predictions, runtime.predictions)
    if error.size != native.rows:
        return {
            "max_abs_diff": float("inf"),
            "worst_row": 0,
            "native_value": None,
            "runtime_value": None,
            "label_mismatches": 0,
            "mismatched_rows": [],
            "passed": False,
            "error": f"returned {np.asarray(runtime.predictions).size} predictions for "
            f"{native.rows} rows",
        }
    row = int(np.argmax(error))
    worst = float(error[row])
    return {
        "max_abs_diff": worst,
        "worst_row": row,
        "native_value": float(native.predictions[row]),
        "runtime_value": float(np.asarray(runtime.predictions, dtype=np.float64)[row]),
        "label_mismatches": 0,
        "mismatched_rows": [],
        "passed": bool(worst <= tolerance),
    }


def compare_outputs(
    native: Outputs, runtime: Outputs, classes: list[str], tolerance: float
) -> dict[str, Any]:
    """Largest probability difference (and where), and label mismatches, of one runtime;
    for regression see :func:`compare_predictions`."""
    if native.probabilities is None:
        return compare_predictions(native, runtime, tolerance)
    if runtime.probabilities.shape != native.probabilities.shape:
        return {
            "max_abs_diff": float("inf"),
            "worst_row": 0,
            "worst_class": None,
            "native_probability": None,
            "runtime_probability": None,
            "label_mismatches": int(len(native.labels)),
            "mismatched_rows": [],
            "passed": False,
            "error": f"probabilities have shape {list(runtime.probabilities.shape)}, "
            f"expected {list(native.probabilities.shape)}",
        }
    runtime_proba = runtime.probabilities.astype(np.float64)
    diff = np.abs(runtime_proba - native.probabilities)
    diff = np.where(np.isnan(diff), np.inf, diff)
    row, col = (int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    mismatched = np.flatnonzero(np.asarray(runtime.labels) != np.asarray(native.labels))
    worst = float(diff[row, col])
    return {
        "max_abs_diff": worst,
        "worst_row": row,
        "worst_class": classes[col],
        "native_probability": float(native.probabilities[row, col]),
        "runtime_probability": float(runtime_proba[row, col]),
        "label_mismatches": int(len(mismatched)),
        "mismatched_rows": [int(i) for i in mismatched[:20]],
        "passed": bool(worst <= tolerance and len(mismatched) == 0),
    }


def check_parity(
    native: Outputs, runtimes: dict[str, Outputs], classes: list[str], tolerance: float
) -> dict[str, Any]:
    """Compare every runtime with the native model on the same rows."""
    results = {
        name: compare_outputs(native, outputs, classes, tolerance)
        for name, outputs in runtimes.items()
    }
    return {
        "passed": all(r["passed"] for r in results.values()),
        "tolerance": tolerance,
        "rows": native.rows,
        "max_abs_diff": max((r["max_abs_diff"] for r in results.values()), default=0.0),
        "runtimes": results,
    }


def parity_failure(report: dict[str, Any], where: str) -> str | None:
    """A one-paragraph explanation of the first failing runtime, or None if all passed."""
    for name, r in report["runtimes"].items():
        if r["passed"]:
            continue
        if "error" in r:
            return f"parity failed on the {where}: {name} {r['error']}."
        if "native_value" in r:
            what = (
                f"prediction: native {r['native_value']:.6g}, {name} {r['runtime_value']:.6g}; "
                "relative to max(1, |native|)"
            )
        else:
            what = (
                f"probability of '{r['worst_class']}': native {r['native_probability']:.6f}, "
                f"{name} {r['runtime_probability']:.6f}"
            )
        text = (
            f"parity failed on the {where} ({report['rows']} rows, tolerance "
            f"{report['tolerance']:.0e}): {name} differs from the native model by "
            f"{r['max_abs_diff']:.3e} at row {r['worst_row']} ({what})"
        )
        if r["label_mismatches"]:
            rows = ", ".join(str(i) for i in r["mismatched_rows"])
            text += f"; {r['label_mismatches']} row(s) get a different label (rows {rows})"
        return (
            text + ". The exported artifact does not compute what the trained model computes; "
            "nothing was written to the export directory."
        )
    return None


# ---------------------------------------------------------------------------- golden rows
#: ``case`` prefixes of the two synthetic golden rows.
MISSING_CASE = "synthetic: missing "
UNSEEN_CASE = "synthetic: unseen category in "


def rows_within_contract(frame: pd.DataFrame, contract: Contract) -> np.ndarray:
    """Which rows every input rule of the contract accepts: no missing value in a column that
    may not have one, numbers within ``[min, max]``, categories from the list."""
    ok = np.ones(len(frame), dtype=bool)
    for c in contract.features:
        column = frame[c.name]
        missing = column.isna().to_numpy()
        if c.max_missing <= 0:
            ok &= ~missing
        if c.is_numeric:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            ok &= missing | ~np.isnan(values)
            if c.min is not None:
                ok &= missing | (values >= c.min)
            if c.max is not None:
                ok &= missing | (values <= c.max)
        elif c.categories is not None:
            ok &= missing | category_text(column).isin(c.categories).to_numpy()
    return ok


def golden_rows(
    test: pd.DataFrame, contract: Contract, n: int, confidence: np.ndarray
) -> tuple[pd.DataFrame, list[str]]:
    """``n`` raw rows and a description of each: test rows plus synthetic edge cases.

    Only test rows that the model's own input rules accept are used (see
    :func:`rows_within_contract`), so a server can replay every golden row. Test rows with
    missing values come first (up to half). The other test rows are spread over the native
    model's confidence (its top probability), from the least confident row up: a saturated
    probability hides small numeric drift, an uncertain one shows it. The synthetic rows are a
    test row with every nullable feature missing (none when no feature is nullable: a null
    there is a request the server must refuse) and, when there are categorical features, a
    test row with an unseen value in every one of them (the one deliberate exception to the
    input rules, marked ``"synthetic": "unseen_category"`` in ``golden.json``).
    """
    if n < 3:
        raise PipelineError(f"export.golden_rows is {n}; it needs at least 3.")
    if test.empty:
        raise PipelineError("the test split is empty; there is nothing to export against.")
    fits = rows_within_contract(test, contract)
    if not fits.any():
        raise PipelineError(
            "no row of the test split satisfies the contract's input rules (nulls, ranges, "
            "categories), so no golden row can be written; check data/contract.yaml."
        )
    nullable = [c.name for c in contract.features if c.max_missing > 0]
    features = test[contract.feature_names]
    synthetic = int(bool(nullable)) + int(bool(contract.categorical_features))
    n_real = min(n - synthetic, int(fits.sum()))
    has_missing = features.isna().any(axis=1).to_numpy()
    with_missing = np.flatnonzero(has_missing & fits)
    complete = np.flatnonzero(~has_missing & fits)
    picked = list(with_missing[: max(1, n_real // 2)])
    rest = n_real - len(picked)
    if rest > 0 and len(complete):
        by_confidence = complete[np.argsort(confidence[complete], kind="stable")]
        spots = np.unique(np.linspace(0, len(complete) - 1, num=rest).round().astype(int))
        picked += list(by_confidence[spots])
    picked = sorted(int(i) for i in picked)

    rows = [test.iloc[i] for i in picked]
    cases = []
    for i in picked:
        missing = [c for c in contract.feature_names if pd.isna(test.iloc[i][c])]
        cases.append(f"test row {i}" + (f", missing {', '.join(missing)}" if missing else ""))

    # As objects: a row of an all-numeric table (integer codes as categories) is float64,
    # which would refuse the unseen category's text.
    base = test.iloc[int(complete[0] if len(complete) else np.flatnonzero(fits)[0])]
    base = base.astype(object)
    if nullable:
        blank = base.copy()
        for name in nullable:
            blank[name] = np.nan if name in contract.numeric_features else None
        rows.append(blank)
        cases.append(MISSING_CASE + ", ".join(nullable))
    if contract.categorical_features:
        unseen = base.copy()
        for name in contract.categorical_features:
            unseen[name] = UNSEEN_CATEGORY
        rows.append(unseen)
        cases.append(UNSEEN_CASE + ", ".join(contract.categorical_features))
    frame = pd.DataFrame(rows).reset_index(drop=True)
    for name in contract.numeric_features:
        frame[name] = pd.to_numeric(frame[name]).astype("float64")
    return frame, cases


def golden_payload(
    frame: pd.DataFrame, cases: list[str], outputs: Outputs, contract: Contract, tolerance: float
) -> dict[str, Any]:
    """The ``golden.json`` document: raw inputs (missing = null) and expected outputs:
    ``label`` and ``probabilities`` (classification) or ``prediction`` (regression)."""
    rows = []
    for i, case in enumerate(cases):
        inputs = {}
        for name in contract.feature_names:
            value = frame[name].iloc[i]
            if pd.isna(value):
                inputs[name] = None
            elif name in contract.numeric_features:
                inputs[name] = float(value)
            else:
                inputs[name] = category_label(value)  # 1.0 (a code column with gaps) -> "1"
        row: dict[str, Any] = {"case": case, "inputs": inputs}
        if case.startswith(UNSEEN_CASE):
            row["synthetic"] = "unseen_category"
        elif case.startswith(MISSING_CASE):
            row["synthetic"] = "missing"
        if outputs.probabilities is None:
            row["prediction"] = float(outputs.predictions[i])
        else:
            row["label"] = str(outputs.labels[i])
            row["probabilities"] = [float(p) for p in outputs.probabilities[i]]
        rows.append(row)
    return {"tolerance": tolerance, "rows": rows}


# ---------------------------------------------------------------------------- descriptor, card
def describe_inputs(
    contract: Contract, onnx_names: list[str] | None = None
) -> tuple[InputSpec, ...]:
    """The descriptor's ``inputs``: what the server accepts for each feature column, and the
    graph input it feeds (``onnx_names``, in contract order; default
    :func:`model_spec.descriptor.onnx_input_names`)."""
    features = contract.features
    names = onnx_names or spec.onnx_input_names([c.name for c in features])
    if len(names) != len(features):
        raise PipelineError(
            f"the ONNX graph has {len(names)} inputs for {len(features)} feature columns."
        )
    return tuple(
        InputSpec(
            name=c.name,
            onnx_name=onnx_name,
            kind=spec.NUMERIC if c.is_numeric else spec.CATEGORICAL,
            nullable=c.max_missing > 0,
            min=c.min if c.is_numeric else None,
            max=c.max if c.is_numeric else None,
            categories=() if c.is_numeric else tuple(c.categories or ()),
        )
        for c, onnx_name in zip(features, names, strict=True)
    )


def build_descriptor(
    name: str,
    native: Any,
    contract: Contract,
    opset: int,
    onnx_inputs: list[str],
    saved_model: bool,
    metrics: dict[str, Any],
    parity: dict[str, Any],
    lineage: Lineage,
) -> ModelDescriptor:
    """The typed ``model.json`` of this export (see :mod:`model_spec.descriptor`)."""
    task = contract.task
    missing = [m for m in REQUIRED_METRICS[task] if m not in metrics]
    if missing:
        raise PipelineError(f"the metrics file lacks {', '.join(missing)}; rerun evaluate.")
    return ModelDescriptor(
        name=name,
        task=task,
        estimator=native.estimator_name,
        family=native.family,
        target=contract.target,
        inputs=describe_inputs(contract, onnx_inputs),
        onnx=OnnxSpec(file=ONNX_FILE, opset=opset, outputs=tuple(outputs_for(task))),
        classes=tuple(str(c) for c in native.classes) if task.is_classification else (),
        saved_model=SavedModelSpec(dir=SAVED_MODEL_DIR) if saved_model else None,
        metrics={k: float(v) for k, v in metrics.items() if k != "rows"},
        parity=spec.Parity(
            passed=bool(parity["passed"]),
            max_abs_diff=float(parity["max_abs_diff"]),
            tolerance=float(parity["tolerance"]),
        ),
        lineage=lineage,
    )


def range_text(low: float | None, high: float | None) -> str:
    """A numeric input's range for the model card; a contract may give one bound or none (a
    column turned from ignored into a feature read "None to None")."""
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    if high is not None:
        return f"at most {high}"
    return "any number (no range in the contract)"


def render_model_card(descriptor: ModelDescriptor, parity: dict[str, Any]) -> str:
    """Markdown model card from the descriptor and the parity report."""
    d = descriptor.to_dict()
    if descriptor.task.is_classification:
        classes = ", ".join(f"`{c}`" for c in d["classes"])
        predicts = f"`{d['target']}` (one of {classes}), with class probabilities,"
        outputs = (
            "outputs `label` `tensor(string)[N]` and `probabilities` `tensor(float)[N, C]` in "
            "the order of the classes."
        )
    else:
        predicts = f"the number `{d['target']}` ({descriptor.task.value})"
        outputs = "output `prediction` `tensor(float)[N, 1]`."
    renamed = [i for i in descriptor.inputs if i.onnx_name != i.name]
    lines = [
        f"# Model card: {d['name']}",
        "",
        f"`{d['estimator']}` ({d['family']} family), exported by the pipeline's `export` stage.",
        "",
        "## Intended use",
        "",
        f"Predicts {predicts} for one or many rows of the raw feature "
        "columns below. Meant for the project's ONNX-based server and "
        "for batch scoring of data that follows the same data contract as the training data. "
        "It is a model of the training data only: not a basis for decisions about data from "
        "another population, and not validated outside the ranges and categories listed.",
        "",
        "## Inputs (from the data contract)",
        "",
        "| column | kind | dtype | missing allowed | categories / range |",
        "|---|---|---|---|---|",
    ]
    for entry in d["inputs"]:
        if entry["kind"] == "numeric":
            allowed = range_text(entry["min"], entry["max"])
        else:
            allowed = ", ".join(entry["categories"])
        nullable = "yes" if entry["nullable"] else "no"
        lines.append(
            f"| `{entry['name']}` | {entry['kind']} | {entry['dtype']} | {nullable} | {allowed} |"
        )
    saved = d["saved_model"]
    lines += [
        "",
        "## Artifacts",
        "",
        f"- `{d['onnx']['file']}`: ONNX opset {d['onnx']['opset']}; inputs "
        + ", ".join(f"`{i}`" for i in d["onnx"]["inputs"])
        + " (each `[N, 1]`: numeric `tensor(double)` with NaN for missing, categorical "
        '`tensor(string)` with `""` for missing); '
        + outputs
        + (
            " Graph input names of columns whose names are not `[A-Za-z0-9_]`: "
            + ", ".join(f"`{i.name}` -> `{i.onnx_name}`" for i in renamed)
            + "; requests use the column names."
            if renamed
            else ""
        ),
        (
            f"- `{saved['dir']}/`: TensorFlow SavedModel, signature `{saved['signature']}` with "
            "the same named inputs, one value per row (shape `[N]`); outputs `label`, "
            "`probabilities`."
            if saved
            else "- No SavedModel: a scikit-learn model has no TensorFlow form; the ONNX graph "
            "is the serving artifact."
        ),
        "- `model.json`: this model's descriptor; `golden.json`: rows with expected outputs.",
        "",
        "## Metrics on the test split",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in d["metrics"].items()]
    lines += [
        "",
        "## Parity",
        "",
        f"Native model vs exported artifacts on the {parity['rows']} rows of the test split, "
        f"tolerance {parity['tolerance']:.0e} "
        + (
            "on every class probability, labels must match."
            if descriptor.task.is_classification
            else "on every prediction, relative to max(1, |native prediction|)."
        ),
        "",
        "| runtime | max abs diff | worst row | label mismatches | passed |",
        "|---|---|---|---|---|",
    ]
    for name, r in parity["runtimes"].items():
        lines.append(
            f"| {name} | {r['max_abs_diff']:.2e} | {r['worst_row']} | "
            f"{r['label_mismatches']} | {'yes' if r['passed'] else 'no'} |"
        )
    lines += [
        "",
        "## Limitations",
        "",
        "- Missing numeric values are replaced by the training median, missing categorical "
        "values by the most frequent training category; the prediction does not say so.",
        "- A category not seen in training is encoded as all zeros (none of the known "
        "categories): the model still answers, with no warning of its own. Numeric values "
        "outside the contract's range are extrapolated, not clipped.",
        (
            "- Probabilities are float32 and reflect the training data's class balance; they "
            "are not calibrated for other populations."
            if descriptor.task.is_classification
            else "- Predictions are float32 and lie in the range the training targets taught; "
            "the model says nothing about its own uncertainty."
        ),
        "- The test split is small, so the metrics above carry sampling noise.",
        "",
        "## Lineage",
        "",
        f"- MLflow run: `{d['lineage']['run_id']}`",
        f"- git commit: `{d['lineage']['git_commit']}`",
        f"- raw data sha256: `{d['lineage']['data_sha256']}`",
        "",
        "| param | value |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | `{v}` |" for k, v in d["lineage"]["params"].items()]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the stage core
def canonical_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with everything that varies between identical runs removed, so the
    file's hash (lineage, registry tags) identifies the model: converters write a random id
    into the graph's doc string (Keras' ONNX export) and list the opset imports in set order
    (skl2onnx). Doc strings of the graph and its nodes are dropped, opset imports are sorted
    by domain (one per domain, the highest version), metadata properties by key. The
    model's own doc string, names and every tensor stay as they are."""
    model = copy.deepcopy(model)
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        versions[entry.domain or ""] = max(versions.get(entry.domain or "", 0), entry.version)
    del model.opset_import[:]
    model.opset_import.extend(
        onnx.helper.make_opsetid(domain, versions[domain]) for domain in sorted(versions)
    )
    props = sorted((p.key, p.value) for p in model.metadata_props)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dict(props))
    return model


def _runtimes(native: Any, out_dir: Path, inputs: tuple[InputSpec, ...]) -> dict[str, Any]:
    """Callables from raw rows to :class:`Outputs`, one per exported artifact in ``out_dir``.

    ONNX Runtime gets its feed from :func:`model_spec.feed.build_feed`, exactly as the gate
    and the server build theirs."""
    contract, task = native.contract, native.task
    session = onnx_export.onnx_session(out_dir / ONNX_FILE)

    def onnxruntime(raw: pd.DataFrame) -> Outputs:
        feed = build_feed(inputs, raw)
        if task.is_regression:
            (prediction,) = session.run([spec.PREDICTION], feed)
            return Outputs(None, predictions=np.asarray(prediction).reshape(-1))
        labels, probabilities = session.run([spec.LABEL, spec.PROBABILITIES], feed)
        return Outputs(np.asarray(labels).astype(str), np.asarray(probabilities))

    runtimes = {"onnxruntime": onnxruntime}
    if native.family == "keras":
        from pipeline import tf_export

        serve = tf_export.load_saved_model(out_dir / SAVED_MODEL_DIR)

        def tensorflow(raw: pd.DataFrame) -> Outputs:
            from pipeline.frames import to_model_frame

            frame = to_model_frame(raw, contract)
            out = tf_export.run_saved_model(serve, frame, contract.numeric_features)
            if task.is_regression:
                return Outputs(None, predictions=np.asarray(out).reshape(-1))
            return Outputs(*out)

        runtimes["tensorflow"] = tensorflow
    return runtimes


def _native_outputs(native: Any, raw: pd.DataFrame) -> Outputs:
    output = np.asarray(native.predict_output(raw), dtype=np.float64)
    if native.task.is_regression:
        return Outputs(None, predictions=output.reshape(-1))
    return Outputs(np.asarray(native.classes, dtype=str)[output.argmax(axis=1)], output)


def parity_tolerance(native: Any, params: Params) -> float:
    """``export.parity_tolerance`` on class probabilities; for regression the estimator's own,
    measured tolerance, relative to ``max(1, |prediction|)`` (see ``pipeline.estimators``)."""
    if native.task.is_regression:
        return native.estimator.parity_tolerance(native.task)
    return params.export.parity_tolerance


def export_model(
    native: Any,
    params: Params,
    test: pd.DataFrame,
    metrics: dict[str, Any],
    lineage: Lineage,
    out_dir: Path,
) -> ExportResult:
    """Write every export artifact into the new directory ``out_dir`` and check parity.

    Raises :class:`ParityError` (with the report) when a runtime disagrees with the native
    model on the test split or on the golden rows, and :class:`PipelineError` for an estimator
    and task its converter is known to get wrong (never exported).
    """
    contract, p = native.contract, params.export
    block = params.train.blocks.get(native.estimator_name)
    if block is not None:
        native.estimator.check(block, native.task)
    tolerance = parity_tolerance(native, params)
    out_dir.mkdir()
    onnx_model = canonical_onnx(onnx_export.to_onnx(native, p.opset))
    onnx_path = out_dir / ONNX_FILE
    onnx_path.write_bytes(onnx_model.SerializeToString())
    if native.family == "keras":
        from pipeline import tf_export

        tf_export.write_saved_model(native, out_dir / SAVED_MODEL_DIR)

    inputs = describe_inputs(contract, [i.name for i in onnx_model.graph.input])
    runtimes = _runtimes(native, out_dir, inputs)
    classes = list(native.classes)
    native_test = _native_outputs(native, test)
    report = check_parity(
        native_test, {n: run(test) for n, run in runtimes.items()}, classes, tolerance
    )
    # Golden rows spread over the model's confidence (classification) or its predictions.
    if native_test.probabilities is None:
        spread = native_test.predictions
    else:
        spread = native_test.probabilities.max(axis=1)
    golden_frame, cases = golden_rows(test, contract, p.golden_rows, spread)
    native_golden = _native_outputs(native, golden_frame)
    golden_outputs = {n: run(golden_frame) for n, run in runtimes.items()}
    golden_report = check_parity(native_golden, golden_outputs, classes, tolerance)
    report["golden"] = {k: golden_report[k] for k in ("passed", "rows", "max_abs_diff", "runtimes")}
    report["passed"] = report["passed"] and golden_report["passed"]
    failure = parity_failure(report, "test split")
    if not failure and not golden_report["passed"]:
        worst = max(golden_report["runtimes"].values(), key=lambda r: r["max_abs_diff"])
        failure = parity_failure(golden_report, "golden rows") + (
            f" (Golden row {worst['worst_row']}: {cases[worst['worst_row']]}.)"
        )
    if failure:
        raise ParityError(failure, report)

    golden = golden_payload(golden_frame, cases, golden_outputs["onnxruntime"], contract, tolerance)
    descriptor = build_descriptor(
        model_name(params, native.task),
        native,
        contract,
        p.opset,
        [i.name for i in onnx_model.graph.input],
        native.family == "keras",
        metrics,
        report,
        lineage,
    )
    (out_dir / GOLDEN_FILE).write_text(json.dumps(golden, indent=2, ensure_ascii=False) + "\n")
    descriptor.write(out_dir)
    (out_dir / CARD_FILE).write_text(render_model_card(descriptor, report))
    return ExportResult(descriptor, report, golden)


# ---------------------------------------------------------------------------- MLflow
def log_export(out_dir: Path, parity_path: Path, result: ExportResult, contract: Contract):
    """Log the export directory and the parity report as artifacts, and the ONNX model as an
    MLflow model (pyfunc ``onnx`` flavour) that ``mlflow models serve`` can serve.

    The model's signature has one named ``[-1, 1]`` tensor per feature column, so
    ``pyfunc.predict`` accepts a DataFrame with one column per feature (numbers as float64
    with NaN, strings with ``""`` for missing) and returns ``{"label", "probabilities"}``
    (classification) or ``{"prediction"}`` (regression).
    Returns the logged model's info.
    """
    import mlflow
    import onnx
    from mlflow.models import infer_signature

    mlflow.log_artifacts(str(out_dir), artifact_path="export")
    mlflow.log_artifact(str(parity_path), artifact_path="export")
    parity = result.parity
    mlflow.log_metrics(
        {
            "parity_max_abs_diff": parity["max_abs_diff"],
            **{
                f"parity_{n}_max_abs_diff": r["max_abs_diff"] for n, r in parity["runtimes"].items()
            },
        }
    )
    frame = pd.DataFrame([row["inputs"] for row in result.golden["rows"]])
    feeds = build_feed(result.descriptor, frame)
    rows = result.golden["rows"]
    if result.descriptor.task.is_regression:
        outputs = {spec.PREDICTION: np.array([[r["prediction"]] for r in rows], dtype=np.float32)}
    else:
        outputs = {
            spec.LABEL: np.array([r["label"] for r in rows], dtype=object),
            spec.PROBABILITIES: np.array([r["probabilities"] for r in rows], dtype=np.float32),
        }
    complete = ~frame.isna().any(axis=1).to_numpy()
    example_rows = np.flatnonzero(complete)[:2] if complete.any() else np.arange(1)
    example = {name: array[example_rows] for name, array in feeds.items()}
    info = mlflow.onnx.log_model(
        onnx.load(str(out_dir / ONNX_FILE)),
        name="onnx_model",
        signature=infer_signature(feeds, outputs),
        input_example=example,
        pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        onnx_execution_providers=["CPUExecutionProvider"],
        save_as_external_data=False,
        # The server finds the descriptor and golden rows next to an MLflow ONNX model here.
        extra_files=[str(out_dir / n) for n in (DESCRIPTOR_FILE, GOLDEN_FILE, CARD_FILE)],
    )
    mlflow.set_tag("export.onnx_model_uri", info.model_uri)
    return info


# ---------------------------------------------------------------------------- the gate report
# ---------------------------------------------------------------------------- CLI
@cli("export")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--train-dir", required=True)
    parser.add_argument("--preprocessor", required=True)
    parser.add_argument("--test", required=True, help="test split (Parquet)")
    parser.add_argument(
        "--splits", help="preprocess's split directory, logged to the run as MLflow datasets"
    )
    parser.add_argument("--raw", required=True, help="raw table, hashed for lineage")
    parser.add_argument("--metrics", required=True, help="evaluate's metrics JSON")
    parser.add_argument("--out", required=True, help="export directory to write")
    parser.add_argument("--parity", required=True, help="parity report (JSON) to write")
    parser.add_argument(
        "--gate-report",
        nargs=2,
        metavar=("JSON", "MD"),
        help="the gate's reports, marked 'not judged' while this export runs and if it fails",
    )
    args = parser.parse_args(argv)

    import os

    from pipeline.tracking import git_commit, log_split_datasets, read_run_id, resume_run

    # MLflow draws progress bars while it logs and validates the model; a stage log wants none.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from pipeline.model import RUN_FILE, load_native_model

    params = load_params(args.params)
    contract = load_contract(params.data.contract)
    for flag, path in (
        ("--train-dir", args.train_dir),
        ("--preprocessor", args.preprocessor),
        ("--test", args.test),
        ("--raw", args.raw),
        ("--metrics", args.metrics),
    ):
        if not Path(path).exists():
            raise PipelineError(
                f"{flag} '{path}' does not exist; run the stages before export "
                "(`dvc repro export` runs whatever is missing)."
            )
    run_file = Path(args.train_dir) / RUN_FILE
    run_id = read_run_id(run_file)
    gate_report = [Path(p) for p in args.gate_report] if args.gate_report else None
    name = model_name(params)
    if gate_report:
        # First, before anything that can fail: the verdict on the previous export is void.
        invalidate_gate_report(
            *gate_report,
            name,
            run_id,
            f"Not judged: the export of run {run_id} started and the gate has not run "
            "on it yet (`make gate`).",
        )
    try:
        test = read_table(args.test)
        native = load_native_model(args.train_dir, args.preprocessor, contract)
        lineage = Lineage(
            run_id=run_id,
            git_commit=git_commit(),
            data_sha256=file_sha256(args.raw),
            params=lineage_params(params),
        )
        if args.splits:
            with resume_run(run_file, params.mlflow.experiment):
                log_split_datasets(args.splits, contract.target, model_name(params))
        with atomic_path(args.out) as tmp:
            result = export_model(native, params, test, read_json(args.metrics), lineage, tmp)
    except Exception as exc:
        # Any failure, a bug included (it keeps its traceback), leaves the record the README
        # describes: parity.json with the error, the gate report "not judged".
        report = exc.report if isinstance(exc, ParityError) else {"passed": False}
        write_json(args.parity, {**report, "run_id": run_id, "error": str(exc)})
        if gate_report:
            kept = (
                f" '{args.out}' still holds the previous export, which `make serve` serves."
                if (Path(args.out) / DESCRIPTOR_FILE).is_file()
                else ""
            )
            invalidate_gate_report(
                *gate_report,
                name,
                run_id,
                f"Not judged: the export of run {run_id} failed, so there is no new "
                f"model to gate: {exc}{kept}",
            )
        raise
    write_json(args.parity, {**result.parity, "run_id": lineage.run_id})

    with resume_run(run_file, params.mlflow.experiment):
        info = log_export(Path(args.out), Path(args.parity), result, contract)
    shown = ", ".join(
        f"{name} max |diff| {r['max_abs_diff']:.1e}"
        for name, r in result.parity["runtimes"].items()
    )
    saved = " + saved_model/" if result.descriptor.saved_model else ""
    print(
        f"export: {native.estimator_name} -> {args.out} (model.onnx{saved}); parity passed on "
        f"{result.parity['rows']} test rows ({shown}); MLflow model {info.model_uri}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
