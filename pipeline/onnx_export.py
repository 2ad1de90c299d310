"""The export stage's ONNX graph: raw named feature columns in, ``label`` and ``probabilities`` out.

One graph per model, whatever the family:

* inputs: one per feature column of the contract, in contract order, shape ``[N, 1]``;
  numeric columns ``tensor(double)`` (missing = NaN), categorical ``tensor(string)``
  (missing = ``""``);
* the fitted preprocessing, computed in double precision like scikit-learn does;
* the model: the scikit-learn estimator (skl2onnx) or the Keras network (Keras' own ONNX
  export, joined to the preprocessing graph with ``onnx.compose``);
* outputs: ``label`` ``tensor(string)[N]`` and ``probabilities`` ``tensor(float)[N, C]``,
  columns in the order of the model's classes.

Precision choices (each measured against the native model, see the parity report):

* Inputs are doubles and the imputer and scaler run in double, because scikit-learn
  transforms in float64. ONNX Runtime's ``Imputer`` only takes floats, so
  :func:`_convert_simple_imputer` writes a numeric imputer as ``IsNaN`` + ``Where`` in double.
* Tree ensembles cast their input to float32 before comparing it with the thresholds, as
  scikit-learn's trees do; skl2onnx then stores each threshold as the float32 value that makes
  ``x <= t`` decide exactly as scikit-learn does. Without that cast the trees see float32
  features computed differently from scikit-learn's and split some rows the other way.
* The Keras network is float32 in both runtimes; the graph casts the double features to float
  just before it, as the native model does.

Only ``onnx``, ``skl2onnx`` and ``onnxruntime`` are imported here at module level; TensorFlow is
imported only when a Keras network is converted.
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

from pipeline.contract import Contract
from pipeline.errors import PipelineError

#: Output names of every exported graph; the descriptor and the server use these.
LABEL, PROBABILITIES = "label", "probabilities"
#: Opset of the ``ai.onnx.ml`` domain (imputer, one-hot encoder, label encoder, tree ensembles).
ML_OPSET = 3
#: Name of the tensor between preprocessing and the Keras network inside the merged graph.
_FEATURES = "model_features"
_NETWORK_PREFIX = "network/"


# ---------------------------------------------------------------------------- inputs
def input_types(contract: Contract) -> list[tuple[str, Any]]:
    """skl2onnx input types: one ``[N, 1]`` tensor per feature, in contract order."""
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    numeric = set(contract.numeric_features)
    return [
        (name, DoubleTensorType([None, 1]) if name in numeric else StringTensorType([None, 1]))
        for name in contract.feature_names
    ]


def onnx_feeds(model_frame: pd.DataFrame, contract: Contract) -> dict[str, np.ndarray]:
    """Turn a model frame (see ``to_model_frame``) into the graph's ``[N, 1]`` input arrays."""
    feeds = {}
    for name in contract.numeric_features:
        feeds[name] = model_frame[name].to_numpy(dtype=np.float64).reshape(-1, 1)
    for name in contract.categorical_features:
        feeds[name] = model_frame[name].to_numpy(dtype=object).astype(str).reshape(-1, 1)
    return feeds


# ---------------------------------------------------------------------------- conversion
def to_onnx(native, opset: int) -> onnx.ModelProto:
    """Convert a ``NativeModel`` (fitted transformer + estimator or network) to one graph."""
    if native.family == "keras":
        model = _keras_graph(native, opset)
    else:
        model = _sklearn_graph(native, opset)
    model.graph.name = native.estimator_name
    model.producer_name = "tabular-mlops export"
    model.doc_string = (
        f"{native.estimator_name} ({native.family}): raw feature columns -> preprocessing -> "
        f"model -> '{LABEL}' and '{PROBABILITIES}'."
    )
    helper.set_model_props(
        model,
        {"classes": json.dumps(list(native.classes)), "estimator": native.estimator_name},
    )
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
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        raise PipelineError(
            f"skl2onnx cannot convert {type(model).__name__} at opset {opset}: {exc}"
        ) from None


def _sklearn_graph(native, opset: int) -> onnx.ModelProto:
    from sklearn.pipeline import Pipeline

    steps: list[tuple[str, Any]] = [("preprocess", native.preprocessor)]
    if _compares_in_float32(native.model):
        from skl2onnx.sklapi import CastTransformer

        steps.append(("float32", CastTransformer(dtype=np.float32)))
    steps.append(("model", native.model))
    model = _convert(
        Pipeline(steps), native.contract, opset, options={id(native.model): {"zipmap": False}}
    )
    label, probabilities = (o.name for o in model.graph.output)
    return _set_outputs(model, label, probabilities, len(native.classes))


def _compares_in_float32(estimator: Any) -> bool:
    """scikit-learn's trees validate X as float32 before comparing it with their thresholds."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    trees = (RandomForestClassifier, ExtraTreesClassifier)
    return isinstance(estimator, trees + (DecisionTreeClassifier, ExtraTreeClassifier))


def _keras_graph(native, opset: int) -> onnx.ModelProto:
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
    (network_input,) = (i.name for i in network.graph.input)
    (network_output,) = (o.name for o in network.graph.output)
    merged = compose.merge_models(preprocess, network, io_map=[(_FEATURES, network_input)])

    classes = [str(c).encode() for c in native.classes]
    merged.graph.initializer.append(
        helper.make_tensor("class_labels", TensorProto.STRING, [len(classes)], classes)
    )
    merged.graph.node.extend(
        [
            helper.make_node(
                "ArgMax", [network_output], ["class_index"], axis=1, keepdims=0, name="argmax"
            ),
            helper.make_node(
                "Gather", ["class_labels", "class_index"], ["network_label"], axis=0, name="labels"
            ),
        ]
    )
    return _set_outputs(merged, "network_label", network_output, len(classes))


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


def _set_outputs(
    model: onnx.ModelProto, label: str, probabilities: str, n_classes: int
) -> onnx.ModelProto:
    """Expose ``label`` (string) and ``probabilities`` (float) as the graph's only outputs."""
    graph = model.graph
    taken = {LABEL, PROBABILITIES}
    if label in taken:
        _rename_tensor(graph, label, "raw_label")
        label = "raw_label"
    if probabilities in taken:
        _rename_tensor(graph, probabilities, "raw_probabilities")
        probabilities = "raw_probabilities"
    graph.node.append(helper.make_node("Identity", [label], [LABEL], name="label_output"))
    graph.node.append(
        helper.make_node(
            "Cast", [probabilities], [PROBABILITIES], to=TensorProto.FLOAT, name="proba_output"
        )
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(LABEL, TensorProto.STRING, [None]),
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [None, n_classes]),
        ]
    )
    return model


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new


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


def run_onnx(session, model_frame: pd.DataFrame, contract: Contract):
    """Labels (str array) and probabilities (float32 ``[N, C]``) for a model frame."""
    labels, probabilities = session.run([LABEL, PROBABILITIES], onnx_feeds(model_frame, contract))
    return np.asarray(labels).astype(str), np.asarray(probabilities)
