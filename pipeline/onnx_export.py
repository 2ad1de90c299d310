"""The export stage's ONNX graph: raw named feature columns in, the task's outputs out.

One graph per model, whatever the estimator:

* inputs: one per feature column of the contract, in contract order, shape ``[N, 1]``;
  numeric columns ``tensor(double)`` (missing = NaN), categorical ``tensor(string)``
  (missing = ``""``). Input names are ``model_spec.descriptor.onnx_input_names`` of the
  column names (``mean radius`` -> ``mean_radius``), and :func:`onnx_feeds` builds the feed with
  ``model_spec.feed.build_feed``, the one raw-columns-to-feed function;
* the fitted preprocessing, computed in double precision like scikit-learn does;
* the model: a scikit-learn-API estimator (skl2onnx; LightGBM and XGBoost through the
  onnxmltools converters registered by their registry entries) or the Keras network (Keras'
  own ONNX export, joined to the preprocessing graph with ``onnx.compose``);
* outputs (``model_spec.descriptor.outputs_for(task)``): classification ``label``
  ``tensor(string)[N]`` (the class of the largest probability) and ``probabilities``
  ``tensor(float)[N, C]``, columns in the order of the model's classes; regression
  ``prediction`` ``tensor(float)[N, 1]``.

Precision choices (each measured against the native model, see the parity report):

* Inputs are doubles and the imputer and scaler run in double, because scikit-learn
  transforms in float64. ONNX Runtime's ``Imputer`` only takes floats, so
  :func:`_convert_simple_imputer` writes a numeric imputer as ``IsNaN`` + ``Where`` in double.
* Tree ensembles cast their input to float32 before comparing it with the thresholds, as
  scikit-learn's trees do; skl2onnx then stores each threshold as the float32 value that makes
  ``x <= t`` decide exactly as scikit-learn does. Without that cast the trees see float32
  features computed differently from scikit-learn's and split some rows the other way.
  A tree *regressor* also sums its leaves in float32 in ONNX Runtime: its parity tolerance is
  the registry's ``FLOAT32_TREE_REGRESSION_TOLERANCE`` (relative), not the probabilities' 1e-5.
* The Keras network is float32 in both runtimes; the graph casts the double features to float
  just before it, as the native model does.

The graph is byte-for-byte reproducible: doc strings (where converters put random ids) are
cleared and opset imports sorted, so two identical runs write the same ``model.onnx``.

Only ``onnx`` and ``numpy`` are imported at module level; skl2onnx, ONNX Runtime and
TensorFlow are imported when they are needed.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, compose, helper

from model_spec.descriptor import (
    CATEGORICAL,
    LABEL,
    NUMERIC,
    PREDICTION,
    PROBABILITIES,
    InputSpec,
    onnx_input_names,
    outputs_for,
)
from model_spec.feed import build_feed
from model_spec.task import Task
from pipeline.contract import Contract
from pipeline.errors import PipelineError

#: Opset of the ``ai.onnx.ml`` domain (imputer, one-hot encoder, label encoder, tree ensembles).
ML_OPSET = 3
#: Name of the tensor between preprocessing and the Keras network inside the merged graph.
_FEATURES = "model_features"
_NETWORK_PREFIX = "network/"


# ---------------------------------------------------------------------------- inputs
def input_specs(contract: Contract) -> tuple[InputSpec, ...]:
    """The graph's inputs as the descriptor records them: one per feature, contract order."""
    onnx_names = onnx_input_names(contract.feature_names)
    specs = []
    for column, onnx_name in zip(contract.features, onnx_names, strict=True):
        specs.append(
            InputSpec(
                name=column.name,
                onnx_name=onnx_name,
                kind=NUMERIC if column.is_numeric else CATEGORICAL,
                nullable=column.max_missing > 0,
                min=column.min if column.is_numeric else None,
                max=column.max if column.is_numeric else None,
                categories=() if column.is_numeric else tuple(column.categories or ()),
            )
        )
    return tuple(specs)


def input_types(contract: Contract) -> list[tuple[str, Any]]:
    """skl2onnx input types: one ``[N, 1]`` tensor per feature, in contract order, under the
    column's own name (the fitted ColumnTransformer selects columns by that name); the graph's
    inputs are renamed to their ONNX names after conversion."""
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    numeric = set(contract.numeric_features)
    return [
        (name, DoubleTensorType([None, 1]) if name in numeric else StringTensorType([None, 1]))
        for name in contract.feature_names
    ]


def onnx_feeds(frame: pd.DataFrame, contract: Contract) -> dict[str, np.ndarray]:
    """The graph's ``[N, 1]`` input arrays for raw rows or a model frame (``to_model_frame``),
    keyed by ONNX input name (``model_spec.feed.build_feed``)."""
    return build_feed(input_specs(contract), {c: frame[c] for c in contract.feature_names})


# ---------------------------------------------------------------------------- conversion
def to_onnx(native, opset: int) -> onnx.ModelProto:
    """Convert a ``NativeModel`` to one graph from raw columns to the task's outputs."""
    estimator, task = native.estimator, native.task
    model = estimator.onnx_graph(native, opset)
    _rename_inputs(model, native.contract)
    model.graph.name = native.estimator_name
    model.producer_name = "tabular-mlops export"
    model.producer_version = ""
    outputs = outputs_for(task)
    model.doc_string = (
        f"{native.estimator_name} ({native.family}, {task.value}): raw feature columns -> "
        f"preprocessing -> model -> {', '.join(repr(o) for o in outputs)}."
    )
    props = {"estimator": native.estimator_name, "task": task.value}
    if task.is_classification:
        props["classes"] = json.dumps(list(native.classes))
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    _make_reproducible(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise PipelineError(f"the exported ONNX graph is not valid: {exc}") from None
    return model


def _convert(model: Any, contract: Contract, opset: int, options: dict | None = None):
    from skl2onnx import convert_sklearn
    from sklearn.impute import SimpleImputer

    try:
        return convert_sklearn(
            model,
            initial_types=input_types(contract),
            target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
            options=options,
            custom_conversion_functions={SimpleImputer: _convert_simple_imputer},
        )
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        raise PipelineError(
            f"skl2onnx cannot convert {type(model).__name__} at opset {opset}: {exc}"
        ) from None


def sklearn_graph(
    native, opset: int, float32: bool = False, options: dict | None = None
) -> onnx.ModelProto:
    """Preprocessing + a scikit-learn-API estimator, converted by skl2onnx in one pipeline.

    ``float32``: cast the features to float32 before the model (tree ensembles).
    ``options``: skl2onnx options of the estimator's operator.
    """
    from sklearn.pipeline import Pipeline

    steps: list[tuple[str, Any]] = [("preprocess", native.preprocessor)]
    if float32:
        from skl2onnx.sklapi import CastTransformer

        steps.append(("float32", CastTransformer(dtype=np.float32)))
    steps.append(("model", native.model))
    converted = _convert(
        Pipeline(steps),
        native.contract,
        opset,
        options={id(native.model): options} if options else None,
    )
    if native.task.is_regression:
        (prediction,) = (o.name for o in converted.graph.output)
        return _set_regression_output(converted, prediction)
    probabilities = converted.graph.output[-1].name
    return _set_classification_outputs(converted, probabilities, native.classes)


def keras_graph(native, opset: int) -> onnx.ModelProto:
    """Preprocessing (skl2onnx) joined to the Keras network (Keras' ONNX export)."""
    preprocess = _convert(native.preprocessor, native.contract, opset)
    (transformed,) = (o.name for o in preprocess.graph.output)
    n_features = len(native.preprocessor.get_feature_names_out())
    preprocess.graph.node.append(
        helper.make_node(
            "Cast", [transformed], [_FEATURES], to=TensorProto.FLOAT, name="features_to_float32"
        )
    )
    del preprocess.graph.output[:]
    preprocess.graph.output.append(
        helper.make_tensor_value_info(_FEATURES, TensorProto.FLOAT, [None, n_features])
    )

    network = compose.add_prefix(network_to_onnx(native.model, n_features, opset), _NETWORK_PREFIX)
    _drop_unused_opsets(network)
    version = max(preprocess.ir_version, network.ir_version)
    preprocess.ir_version = network.ir_version = version
    # skl2onnx declares the lowest opset its nodes need (16 for a numbers-only table); both
    # halves declare the requested one, which every node they hold supports.
    for half in (preprocess, network):
        for entry in half.opset_import:
            if (entry.domain or "") == "":
                entry.version = max(entry.version, opset)
    (network_input,) = (i.name for i in network.graph.input)
    (network_output,) = (o.name for o in network.graph.output)
    merged = compose.merge_models(preprocess, network, io_map=[(_FEATURES, network_input)])
    if native.task.is_regression:
        return _set_regression_output(merged, network_output)
    return _set_classification_outputs(merged, network_output, native.classes)


def network_to_onnx(network: Any, n_features: int, opset: int) -> onnx.ModelProto:
    """The Keras network alone (float32 ``[N, n_features]`` in), via Keras' ONNX export."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, n_features), tf.float32, name="features")]
    with tempfile.TemporaryDirectory(prefix="network-onnx-") as tmp, warnings.catch_warnings():
        # Keras' bundled tf2onnx shim probes `np.object`, which numpy 2 warns about.
        warnings.simplefilter("ignore", FutureWarning)
        path = Path(tmp) / "network.onnx"
        network.export(
            str(path), format="onnx", opset_version=opset, input_signature=signature, verbose=False
        )
        return onnx.load(str(path))


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Forget opset imports no node uses, so merging does not trip on irrelevant versions."""
    used = {node.domain or "" for node in model.graph.node}
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain == ""]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _free_name(graph: onnx.GraphProto, wanted: str) -> None:
    """Rename any tensor already called ``wanted`` so the name is free for an output."""
    names = {n for node in graph.node for n in (*node.input, *node.output)}
    names |= {v.name for v in (*graph.input, *graph.output)} | {i.name for i in graph.initializer}
    if wanted in names:
        _rename_tensor(graph, wanted, f"raw_{wanted}")


def float32_threshold(threshold: float, mode: str = "<=") -> float:
    """The float32 value ``v`` for which ``x <= v`` (``mode`` ``<=``; ``<``: ``x < v``) decides
    every float32 ``x`` exactly as ``x <= threshold`` does, as a Python float.

    A converter that stores the nearest float32 of a float64 threshold ``t`` gets this wrong
    when the rounding goes up and a float32 input equals the rounded value: it goes left in
    ONNX and right in the library. LightGBM puts its thresholds half-way between two float32
    data values, so test rows hit exactly this (measured: 1.3 on the diabetes target)."""
    t = float(threshold)
    v = np.float32(t)
    if mode == "<=" and float(v) > t:
        v = np.nextafter(v, np.float32(-np.inf))
    elif mode == "<" and float(v) < t:
        v = np.nextafter(v, np.float32(np.inf))
    return float(v)


def _set_classification_outputs(
    model: onnx.ModelProto, probabilities: str, classes: list[str]
) -> onnx.ModelProto:
    """Expose ``label`` (string: the class of the largest probability) and ``probabilities``
    (float) as the graph's only outputs. The label is computed here, not taken from the
    converter, so it is a class name (the models are fitted on class indices) and always the
    argmax of the probabilities, as the native model's label is."""
    graph = model.graph
    for name in (LABEL, PROBABILITIES, "class_labels", "class_index", "proba_float"):
        if name == probabilities:
            _rename_tensor(graph, probabilities, f"raw_{probabilities}")
            probabilities = f"raw_{probabilities}"
        _free_name(graph, name)
    encoded = [str(c).encode() for c in classes]
    graph.initializer.append(
        helper.make_tensor("class_labels", TensorProto.STRING, [len(encoded)], encoded)
    )
    graph.node.extend(
        [
            helper.make_node(
                "Cast", [probabilities], [PROBABILITIES], to=TensorProto.FLOAT, name="proba_output"
            ),
            helper.make_node(
                "ArgMax", [PROBABILITIES], ["class_index"], axis=1, keepdims=0, name="argmax"
            ),
            helper.make_node(
                "Gather", ["class_labels", "class_index"], [LABEL], axis=0, name="label_output"
            ),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(LABEL, TensorProto.STRING, [None]),
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [None, len(classes)]),
        ]
    )
    return model


def _set_regression_output(model: onnx.ModelProto, prediction: str) -> onnx.ModelProto:
    """Expose ``prediction`` (float ``[N, 1]``) as the graph's only output."""
    graph = model.graph
    if prediction == PREDICTION:
        _rename_tensor(graph, prediction, f"raw_{prediction}")
        prediction = f"raw_{prediction}"
    _free_name(graph, PREDICTION)
    graph.node.append(
        helper.make_node("Reshape", [prediction, "prediction_shape"], ["prediction_column"])
    )
    graph.initializer.append(
        helper.make_tensor("prediction_shape", TensorProto.INT64, [2], [-1, 1])
    )
    graph.node.append(
        helper.make_node(
            "Cast", ["prediction_column"], [PREDICTION], to=TensorProto.FLOAT, name="prediction"
        )
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(PREDICTION, TensorProto.FLOAT, [None, 1]))
    return model


def _rename_inputs(model: onnx.ModelProto, contract: Contract) -> None:
    """Give the graph's inputs (in contract order) their ``onnx_input_names``."""
    graph = model.graph
    wanted = onnx_input_names(contract.feature_names)
    if len(graph.input) != len(wanted):
        raise PipelineError(
            f"the converted graph has {len(graph.input)} inputs for {len(wanted)} features."
        )
    current = [i.name for i in graph.input]
    # Two passes through temporary names, so swapping two names cannot collide.
    for i, old in enumerate(current):
        _rename_tensor(graph, old, f"__input_{i}__")
    for i, new in enumerate(wanted):
        # The converter may have given the name to a tensor of its own (skl2onnx renames an
        # input called 'variable' to 'variable2' and calls its output 'variable').
        if new in _tensor_names(graph):
            _rename_tensor(graph, new, _unused(graph, f"converter_{new}"))
        _rename_tensor(graph, f"__input_{i}__", new)


def _tensor_names(graph: onnx.GraphProto) -> set[str]:
    names = {n for node in graph.node for n in (*node.input, *node.output)}
    return (
        names
        | {v.name for v in (*graph.input, *graph.output)}
        | {i.name for i in graph.initializer}
    )


def _unused(graph: onnx.GraphProto, base: str) -> str:
    names, name, n = _tensor_names(graph), base, 1
    while name in names:
        n += 1
        name = f"{base}_{n}"
    return name


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def _make_reproducible(model: onnx.ModelProto) -> None:
    """Clear doc strings (Keras' converter writes a random id there) and sort opset imports."""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        value.doc_string = ""
    opsets = sorted((o.domain or "", o.version) for o in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets)
    functions = sorted(model.functions, key=lambda f: (f.domain, f.name))
    del model.functions[:]
    model.functions.extend(functions)


def _convert_simple_imputer(scope, operator, container) -> None:
    """SimpleImputer for skl2onnx that keeps double inputs double.

    skl2onnx writes numeric imputation as the ``ai.onnx.ml`` ``Imputer`` operator, which ONNX
    Runtime implements for float32 and int64 only. For double inputs this writes
    ``Where(IsNaN(x), statistics, x)`` instead; string inputs go to skl2onnx's own converter.
    """
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer

    imputer = operator.raw_operator
    if not all(isinstance(v.type, DoubleTensorType) for v in operator.inputs):
        convert_sklearn_imputer(scope, operator, container)
        return
    missing = imputer.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)) or imputer.add_indicator:
        raise NotImplementedError(
            "numeric SimpleImputer export supports missing_values=NaN without add_indicator."
        )
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if np.isnan(statistics).any():
        raise NotImplementedError(
            "a numeric feature had no values at all when the imputer was fitted."
        )
    names = [v.full_name for v in operator.inputs]
    if len(names) > 1:
        joined = scope.get_unique_variable_name("imputer_input")
        container.add_node("Concat", names, [joined], axis=1)
    else:
        joined = names[0]
    isnan = scope.get_unique_variable_name("is_missing")
    fill = scope.get_unique_variable_name("imputer_statistics")
    container.add_initializer(fill, TensorProto.DOUBLE, [1, statistics.size], statistics.tolist())
    container.add_node("IsNaN", [joined], [isnan], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node(
        "Where",
        [isnan, fill, joined],
        [operator.outputs[0].full_name],
        name=scope.get_unique_operator_name("Impute"),
    )


# ---------------------------------------------------------------------------- running
def onnx_session(model: onnx.ModelProto | str | Path):
    """An ONNX Runtime session on the CPU, quiet about harmless graph warnings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_output(session, frame: pd.DataFrame, contract: Contract, task: Task) -> np.ndarray:
    """What :meth:`NativeModel.predict_output` returns, from the graph: probabilities
    ``[N, C]`` or predictions ``[N]`` (float32 values)."""
    feeds = onnx_feeds(frame, contract)
    if task.is_regression:
        (prediction,) = session.run([PREDICTION], feeds)
        return np.asarray(prediction).reshape(-1)
    (probabilities,) = session.run([PROBABILITIES], feeds)
    return np.asarray(probabilities)


def run_onnx(session, frame: pd.DataFrame, contract: Contract):
    """Classification: labels (str array) and probabilities (float32 ``[N, C]``)."""
    labels, probabilities = session.run([LABEL, PROBABILITIES], onnx_feeds(frame, contract))
    return np.asarray(labels).astype(str), np.asarray(probabilities)
