"""The export stage's TensorFlow SavedModel for the Keras family.

The ``serving_default`` signature takes the raw feature columns, one value per row (shape
``[N]``: numeric ``float64`` with NaN for missing, categorical ``string`` with ``""`` for
missing), each under the column's ONNX input name (``model_spec.descriptor.onnx_input_names``:
the column name itself when it is already ``[A-Za-z0-9_]``, e.g. ``island``; ``mean radius``
becomes ``mean_radius``, as TensorFlow signature keys cannot hold spaces), so TensorFlow
Serving's row format ``{"instances": [{"island": "Biscoe", ...}]}`` works as is. It returns
the task's outputs: ``label`` (string ``[N]``) and ``probabilities`` (float32 ``[N, C]``) for
classification, ``prediction`` (float32 ``[N, 1]``) for regression.

The preprocessing is written in TensorFlow ops initialised from the fitted scikit-learn
transformer, in float64 like scikit-learn: median imputation and standard scaling for numeric
columns; most-frequent imputation of ``""`` and a one-hot encoding through a static hash table
for categorical ones, where an unseen category maps to all zeros (``handle_unknown="ignore"``).

TensorFlow is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_spec.descriptor import LABEL, PREDICTION, PROBABILITIES, onnx_input_names
from pipeline.errors import PipelineError

SIGNATURE = "serving_default"


@dataclass(frozen=True)
class NumericColumn:
    name: str
    median: float
    mean: float
    scale: float


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    most_frequent: str
    categories: tuple[str, ...]


def preprocessing_plan(preprocessor: Any) -> list[NumericColumn | CategoricalColumn]:
    """Read the fitted ``ColumnTransformer`` of the preprocess stage into plain values.

    The order of the returned columns is the order of the transformed features. Anything but
    the structure ``build_preprocessor`` makes is refused, so the TensorFlow graph cannot
    silently drift from the scikit-learn one.
    """
    plan: list[NumericColumn | CategoricalColumn] = []
    for name, transformer, columns in preprocessor.transformers_:
        if name == "remainder":
            if transformer != "drop":
                raise _unsupported(f"remainder={transformer!r}")
            continue
        steps = getattr(transformer, "named_steps", {})
        if name == "num" and list(steps) == ["impute", "scale"]:
            imputer, scaler = steps["impute"], steps["scale"]
            _check_imputer(imputer, numeric=True)
            mean = scaler.mean_ if scaler.with_mean else np.zeros(len(columns))
            scale = scaler.scale_ if scaler.with_std else np.ones(len(columns))
            for i, column in enumerate(columns):
                plan.append(
                    NumericColumn(
                        column, float(imputer.statistics_[i]), float(mean[i]), float(scale[i])
                    )
                )
        elif name == "cat" and list(steps) == ["impute", "onehot"]:
            imputer, encoder = steps["impute"], steps["onehot"]
            _check_imputer(imputer, numeric=False)
            if encoder.drop_idx_ is not None or encoder.handle_unknown != "ignore":
                raise _unsupported("OneHotEncoder with drop or handle_unknown != 'ignore'")
            if getattr(encoder, "_infrequent_enabled", False):
                raise _unsupported("OneHotEncoder with infrequent categories")
            for i, column in enumerate(columns):
                categories = tuple(str(c) for c in encoder.categories_[i])
                plan.append(CategoricalColumn(column, str(imputer.statistics_[i]), categories))
        else:
            raise _unsupported(f"transformer '{name}' ({type(transformer).__name__})")
    return plan


def _check_imputer(imputer: Any, numeric: bool) -> None:
    if imputer.add_indicator:
        raise _unsupported("SimpleImputer(add_indicator=True)")
    if numeric and np.isnan(np.asarray(imputer.statistics_, dtype=float)).any():
        raise _unsupported("a numeric column with no values at fit time")


def _unsupported(what: str) -> PipelineError:
    return PipelineError(
        f"the SavedModel export supports the preprocess stage's transformer "
        f"(num: impute+scale, cat: impute+onehot); found {what}."
    )


def write_saved_model(native, path: str | Path) -> None:
    """Write the SavedModel for a Keras ``NativeModel`` to ``path`` (a new directory)."""
    import keras
    import tensorflow as tf

    plan = preprocessing_plan(native.preprocessor)
    tables = {}
    for column in plan:
        if isinstance(column, CategoricalColumn):
            tables[column.name] = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(list(column.categories), tf.string),
                    tf.range(len(column.categories), dtype=tf.int64),
                ),
                default_value=-1,  # unseen -> one_hot of -1 -> all zeros
            )
    regression = native.task.is_regression
    classes = tf.constant(list(native.classes) or [""], tf.string)
    network = native.model
    keys = dict(
        zip(
            native.contract.feature_names,
            onnx_input_names(native.contract.feature_names),
            strict=True,
        )
    )

    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        parts = []
        for column in plan:
            x = features[keys[column.name]]
            if isinstance(column, NumericColumn):
                x = tf.where(tf.math.is_nan(x), tf.constant(column.median, tf.float64), x)
                x = (x - tf.constant(column.mean, tf.float64)) / tf.constant(
                    column.scale, tf.float64
                )
                parts.append(x[:, None])
            else:
                x = tf.where(tf.equal(x, ""), tf.constant(column.most_frequent), x)
                index = tables[column.name].lookup(x)
                parts.append(tf.one_hot(index, len(column.categories), dtype=tf.float64))
        output = network(tf.cast(tf.concat(parts, axis=1), tf.float32), training=False)
        if regression:
            return {PREDICTION: tf.reshape(output, (-1, 1))}
        label = tf.gather(classes, tf.argmax(output, axis=1))
        return {LABEL: label, PROBABILITIES: output}

    numeric = {c.name for c in plan if isinstance(c, NumericColumn)}
    signature = {
        keys[c.name]: tf.TensorSpec(
            [None], tf.float64 if c.name in numeric else tf.string, keys[c.name]
        )
        for c in plan
    }
    archive = keras.export.ExportArchive()
    archive.track(network)
    for table in tables.values():
        archive.track(table)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[signature])
    archive.write_out(str(path), verbose=False)


def load_saved_model(path: str | Path):
    """The ``serving_default`` function of a SavedModel written by :func:`write_saved_model`."""
    import tensorflow as tf

    return tf.saved_model.load(str(path)).signatures[SIGNATURE]


def run_saved_model(serve, model_frame: pd.DataFrame, numeric: list[str]):
    """Classification: labels (str array) and probabilities (float32 ``[N, C]``) for a model
    frame; regression: predictions (float32 ``[N]``)."""
    import tensorflow as tf

    keys = onnx_input_names(list(model_frame.columns))
    inputs = {}
    for name, key in zip(model_frame.columns, keys, strict=True):
        if name in numeric:
            inputs[key] = tf.constant(model_frame[name].to_numpy(np.float64))
        else:
            inputs[key] = tf.constant(model_frame[name].to_numpy(object).astype(str))
    out = serve(**inputs)
    if PREDICTION in out:
        return out[PREDICTION].numpy().reshape(-1)
    labels = np.array([v.decode("utf-8") for v in out[LABEL].numpy()], dtype=str)
    return labels, out[PROBABILITIES].numpy()
