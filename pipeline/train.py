"""``train``: fit the estimator named by ``train.estimator`` and open the pipeline's MLflow run.

Two families share one interface: scikit-learn estimators (``logistic_regression``,
``random_forest``) and a Keras network (``keras_mlp``, early stopping on the validation split).
Both are fitted on the output of the preprocess stage's transformer; :func:`load_native_model`
joins the two back into one raw-rows-in, probabilities-out model for evaluate and export.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer

from pipeline.config import Params, TrainParams, family_of, flatten, load_params
from pipeline.contract import Contract, load_contract
from pipeline.errors import PipelineError, cli
from pipeline.io import atomic_path, file_sha256, read_json, read_table, write_json
from pipeline.preprocess import to_model_frame
from pipeline.tracking import configure, git_commit, write_run_file

SKLEARN_FILE = "estimator.joblib"
KERAS_FILE = "network.keras"
CLASSES_FILE = "classes.json"
RUN_FILE = "run.json"


@dataclass
class TrainResult:
    """A fitted model plus what was seen while fitting it."""

    model: Any
    family: str
    classes: list[str]
    #: One row per epoch (Keras) or per step of a learning curve (scikit-learn).
    history: pd.DataFrame
    val_metrics: dict[str, float] = field(default_factory=dict)


def import_keras():
    """Import Keras quietly: no C++ log lines, no progress bars in a pipeline's output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import absl.logging
    import keras

    absl.logging.set_verbosity(absl.logging.ERROR)
    keras.utils.disable_interactive_logging()
    return keras


# ---------------------------------------------------------------------------- the native model
@dataclass
class NativeModel:
    """The fitted transformer and estimator as one model over raw rows."""

    preprocessor: ColumnTransformer
    model: Any
    family: str
    estimator_name: str
    classes: list[str]
    contract: Contract

    def transform(self, raw: pd.DataFrame) -> np.ndarray:
        return self.preprocessor.transform(to_model_frame(raw, self.contract))

    def predict_proba(self, raw: pd.DataFrame) -> np.ndarray:
        features = self.transform(raw)
        if self.family == "keras":
            return np.asarray(self.model(features.astype("float32"), training=False))
        return self.model.predict_proba(features)

    def predict(self, raw: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[self.predict_proba(raw).argmax(axis=1)]


def load_native_model(
    train_dir: str | Path, preprocessor_path: str | Path, contract: Contract
) -> NativeModel:
    train_dir = Path(train_dir)
    classes = read_json(train_dir / CLASSES_FILE)
    preprocessor = joblib.load(preprocessor_path)
    if (train_dir / KERAS_FILE).exists():
        keras = import_keras()
        model, family = keras.models.load_model(train_dir / KERAS_FILE), "keras"
    elif (train_dir / SKLEARN_FILE).exists():
        model, family = joblib.load(train_dir / SKLEARN_FILE), "sklearn"
    else:
        raise PipelineError(f"'{train_dir}' holds no trained model; run the train stage.")
    name = read_json(train_dir / RUN_FILE).get("estimator", family)
    return NativeModel(preprocessor, model, family, name, classes, contract)


# ---------------------------------------------------------------------------- scikit-learn
def _sklearn_estimator(name: str, params: TrainParams):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "logistic_regression":
        p = params.logistic_regression
        return LogisticRegression(C=p.C, max_iter=p.max_iter, random_state=params.seed)
    p = params.random_forest
    return RandomForestClassifier(
        n_estimators=p.n_estimators,
        max_depth=p.max_depth,
        min_samples_leaf=p.min_samples_leaf,
        random_state=params.seed,
        n_jobs=1,
    )


def _fit_sklearn(
    name: str, params: TrainParams, x_train, y_train, x_val, y_val, classes: list[str]
) -> TrainResult:
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, log_loss

    estimator = _sklearn_estimator(name, params)
    rows = []
    # A learning curve stands in for "iterations": validation scores as the training set
    # grows, so a run shows whether more data would still help.
    for share in (0.25, 0.5, 0.75, 1.0):
        n = max(len(classes) * 2, int(round(share * len(x_train))))
        if n < len(x_train):
            order = np.random.default_rng(params.seed).permutation(len(x_train))[:n]
            part_x, part_y = x_train[order], y_train[order]
            if len(set(part_y)) < len(classes):
                continue
            fitted = clone(estimator).fit(part_x, part_y)
        else:
            fitted = estimator.fit(x_train, y_train)
        proba = fitted.predict_proba(x_val)
        rows.append(
            {
                "step": len(rows),
                "train_rows": n,
                "val_accuracy": accuracy_score(y_val, fitted.classes_[proba.argmax(1)]),
                "val_log_loss": log_loss(y_val, proba, labels=fitted.classes_),
            }
        )
    history = pd.DataFrame(rows)
    last = history.iloc[-1]
    return TrainResult(
        model=estimator,
        family="sklearn",
        classes=classes,
        history=history,
        val_metrics={"val_accuracy": last.val_accuracy, "val_log_loss": last.val_log_loss},
    )


# ---------------------------------------------------------------------------- Keras
def _fit_keras(params: TrainParams, x_train, y_train, x_val, y_val, classes: list[str]):
    keras = import_keras()
    import tensorflow as tf

    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    p = params.keras_mlp
    index = {c: i for i, c in enumerate(classes)}
    y_train_i = np.array([index[v] for v in y_train])
    y_val_i = np.array([index[v] for v in y_val])

    layers: list[Any] = [keras.Input(shape=(x_train.shape[1],), name="features")]
    for units in p.hidden_units:
        layers.append(keras.layers.Dense(units, activation="relu"))
        if p.dropout > 0:
            layers.append(keras.layers.Dropout(p.dropout, seed=params.seed))
    layers.append(keras.layers.Dense(len(classes), activation="softmax", name="probabilities"))
    network = keras.Sequential(layers, name="keras_mlp")
    network.compile(
        optimizer=keras.optimizers.Adam(learning_rate=p.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=p.patience, restore_best_weights=True
    )
    fit = network.fit(
        x_train.astype("float32"),
        y_train_i,
        validation_data=(x_val.astype("float32"), y_val_i),
        epochs=p.epochs,
        batch_size=p.batch_size,
        shuffle=True,
        callbacks=[stop],
        verbose=0,
    )
    history = pd.DataFrame(fit.history)
    history.insert(0, "step", range(len(history)))
    history = history.rename(columns={"accuracy": "train_accuracy", "loss": "train_loss"})
    history = history.rename(columns={"val_loss": "val_log_loss"})
    best = int(history["val_log_loss"].idxmin())
    return TrainResult(
        model=network,
        family="keras",
        classes=classes,
        history=history,
        val_metrics={
            "val_accuracy": float(history.loc[best, "val_accuracy"]),
            "val_log_loss": float(history.loc[best, "val_log_loss"]),
            "best_epoch": best,
        },
    )


def train_model(
    estimator: str,
    params: TrainParams,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
) -> TrainResult:
    """Fit ``estimator`` on transformed features; classes are the sorted training labels."""
    classes = sorted(str(c) for c in set(y_train))
    if family_of(estimator) == "keras":
        return _fit_keras(params, x_train, y_train, x_val, y_val, classes)
    return _fit_sklearn(estimator, params, x_train, y_train, x_val, y_val, classes)


# ---------------------------------------------------------------------------- MLflow
def _log_to_mlflow(
    result: TrainResult, native: NativeModel, params: Params, example: pd.DataFrame
) -> None:
    import mlflow
    from mlflow.models import infer_signature

    mlflow.log_params(flatten(params))
    for row in result.history.to_dict("records"):
        step = int(row.pop("step"))
        mlflow.log_metrics({k: float(v) for k, v in row.items()}, step=step)
    mlflow.log_metrics({k: float(v) for k, v in result.val_metrics.items()})

    if result.family == "keras":
        import mlflow.tensorflow

        features = native.transform(example).astype("float32")
        mlflow.tensorflow.log_model(
            result.model,
            name="model",
            signature=infer_signature(features, native.predict_proba(example)),
            input_example=features,
            pip_requirements=["tensorflow-cpu==2.21.0", "keras==3.15.1"],
        )
    else:
        import mlflow.sklearn
        from sklearn.pipeline import Pipeline

        model_frame = to_model_frame(example, native.contract)
        pipeline = Pipeline([("preprocess", native.preprocessor), ("model", result.model)])
        mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(model_frame, native.predict_proba(example)),
            input_example=model_frame,
            serialization_format="skops",
            skops_trusted_types=_skops_trusted_types(pipeline),
            pip_requirements=["scikit-learn==1.9.1", "skops"],
        )


def _skops_trusted_types(obj: Any) -> list[str]:
    """Types skops would refuse by default (e.g. ``numpy.dtype``), all of them plain data."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(obj))


# ---------------------------------------------------------------------------- CLI
@cli("train")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--splits", required=True, help="dir with train/val/test.parquet")
    parser.add_argument("--preprocessor", required=True)
    parser.add_argument("--raw", required=True, help="raw table, hashed for lineage")
    parser.add_argument("--out", required=True, help="model dir to write")
    parser.add_argument("--history", required=True, help="per-step training history (CSV)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    contract = load_contract(params.data.contract)
    splits = Path(args.splits)
    train, val = read_table(splits / "train.parquet"), read_table(splits / "val.parquet")
    preprocessor = joblib.load(args.preprocessor)
    target = contract.target
    x_train = preprocessor.transform(to_model_frame(train, contract))
    x_val = preprocessor.transform(to_model_frame(val, contract))
    y_train, y_val = train[target].astype(str).to_numpy(), val[target].astype(str).to_numpy()

    estimator = params.train.estimator
    experiment_id = configure(params.mlflow.experiment)
    import mlflow

    tags = {
        "git_commit": git_commit(),
        "data_sha256": file_sha256(args.raw),
        "estimator": estimator,
        "family": family_of(estimator),
    }
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        result = train_model(estimator, params.train, x_train, y_train, x_val, y_val)
        native = NativeModel(
            preprocessor, result.model, result.family, estimator, result.classes, contract
        )
        _log_to_mlflow(result, native, params, val.head(5))
        with atomic_path(args.out) as tmp:
            tmp.mkdir()
            if result.family == "keras":
                result.model.save(tmp / KERAS_FILE)
            else:
                joblib.dump(result.model, tmp / SKLEARN_FILE)
            write_json(tmp / CLASSES_FILE, result.classes)
            write_run_file(tmp / RUN_FILE, run.info.run_id, experiment_id, estimator=estimator)
        _write_csv(args.history, result.history)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.val_metrics.items())
    print(f"train: {estimator} ({result.family}); validation {shown}; MLflow run {run.info.run_id}")


def _write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


if __name__ == "__main__":
    raise SystemExit(main())
