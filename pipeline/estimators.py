"""The estimator registry: every model the pipeline can train, in one table.

An entry says what the rest of the pipeline asks about an estimator: its name (the value of
``train.estimator`` and of its ``params.yaml`` block), its family (the library), the tasks it
supports, how it is built from its params block, fitted, saved and loaded, how it becomes
ONNX, the parity tolerance its conversion meets per task, and the combinations known to
convert wrongly (:meth:`Estimator.refuse`). Code asks the entry; it never tests names.

Adding an estimator: one entry in :data:`ESTIMATORS` (with a params dataclass), its block under
``train:`` in ``params.yaml``, and its tests in ``tests/unit/test_estimators.py``.

Shipped (task support follows the library):

======================  ==========  ============================================
name                    family      tasks
======================  ==========  ============================================
logistic_regression     sklearn     binary, multiclass
ridge                   sklearn     regression
random_forest           sklearn     binary, multiclass, regression
hist_gradient_boosting  sklearn     binary, multiclass, regression
lightgbm                lightgbm    binary, multiclass, regression
xgboost                 xgboost     binary, multiclass, regression
keras_mlp               keras       binary, multiclass, regression
======================  ==========  ============================================

Every estimator is fitted on the output of the preprocess stage's transformer (numbers,
float64). Libraries are imported when an estimator is built or loaded, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_spec.task import Task
from pipeline.errors import PipelineError

CLASSIFICATION = frozenset({Task.BINARY, Task.MULTICLASS})
ALL_TASKS = frozenset(Task)
REGRESSION = frozenset({Task.REGRESSION})

#: Parity tolerance on probabilities (absolute), every classifier.
PROBABILITY_TOLERANCE = 1e-5
#: Parity tolerance on predictions of regressors computed in double precision up to the final
#: float32 output (linear models, Keras): relative to max(1, |native prediction|).
REGRESSION_TOLERANCE = 1e-5
#: Tree ensembles whose ONNX graph compares and sums in float32 (TreeEnsembleRegressor): the
#: sum of hundreds of float32 leaf values drifts from the library's float64 sum. Measured on
#: the test split of the bundled diabetes table (see BENCHMARKS.md); relative, like above.
FLOAT32_TREE_REGRESSION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Fitted:
    """A fitted model and what was seen while fitting it."""

    model: Any
    #: One row per epoch (Keras) or per step of a learning curve (the others). Columns:
    #: ``step``, ``val_loss`` and ``val_score`` for every task (log loss and accuracy for
    #: classification, RMSE and R² for regression) plus the task's named metrics.
    history: pd.DataFrame
    val_metrics: dict[str, float] = field(default_factory=dict)


def parity_error(task: Task, native: np.ndarray, runtime: np.ndarray) -> np.ndarray:
    """Per-value disagreement of a runtime with the native model, in the unit of
    :meth:`Estimator.parity_tolerance`: absolute on probabilities; for regression relative to
    ``max(1, |native|)``, so a target in the thousands is held to the same digits as one near 1.
    NaN (or a shape mismatch) counts as infinitely wrong."""
    native = np.asarray(native, dtype=np.float64)
    runtime = np.asarray(runtime, dtype=np.float64)
    if task.is_regression:
        native, runtime = native.reshape(-1), runtime.reshape(-1)
    if native.shape != runtime.shape:
        return np.full(max(native.size, 1), np.inf)
    diff = np.abs(runtime - native)
    if task.is_regression:
        diff = diff / np.maximum(1.0, np.abs(native))
    return np.where(np.isnan(diff), np.inf, diff)


# ---------------------------------------------------------------------------- params blocks
@dataclass(frozen=True)
class LogisticRegressionParams:
    C: float
    max_iter: int


@dataclass(frozen=True)
class RidgeParams:
    alpha: float


@dataclass(frozen=True)
class RandomForestParams:
    n_estimators: int
    max_depth: int | None
    min_samples_leaf: int


@dataclass(frozen=True)
class HistGradientBoostingParams:
    max_iter: int
    learning_rate: float
    max_leaf_nodes: int
    min_samples_leaf: int
    l2_regularization: float


@dataclass(frozen=True)
class LightGBMParams:
    n_estimators: int
    learning_rate: float
    num_leaves: int
    min_child_samples: int
    subsample: float
    colsample_bytree: float
    reg_lambda: float


@dataclass(frozen=True)
class XGBoostParams:
    n_estimators: int
    learning_rate: float
    max_depth: int
    subsample: float
    colsample_bytree: float
    reg_lambda: float
    #: null: the library's default for the task (binary:logistic, multi:softprob,
    #: reg:squarederror).
    objective: str | None


@dataclass(frozen=True)
class KerasMLPParams:
    hidden_units: tuple[int, ...]
    dropout: float
    learning_rate: float
    epochs: int
    batch_size: int
    patience: int


# ---------------------------------------------------------------------------- the entry type
class Estimator:
    """What the pipeline knows about one estimator. Subclasses implement a family."""

    name: str
    family: str
    tasks: frozenset[Task]
    params_type: type
    #: File of the fitted model inside the train stage's output directory.
    artifact: str
    #: Export also writes a TensorFlow SavedModel for this estimator.
    saved_model: bool = False
    #: MLflow flavour the train stage logs the model with: "sklearn" (the preprocessing and
    #: the estimator as one scikit-learn Pipeline, skops format) or "tensorflow".
    mlflow_flavor: str = "sklearn"
    #: Distributions (PyPI names) the logged model needs, pinned to the installed versions.
    requirements: tuple[str, ...] = ("scikit-learn",)
    #: Its settings in ``train.<name>`` that make it less sure of itself (the gate names them
    #: for overconfident probabilities).
    regularisers: str = ""
    #: Its setting for the least training rows a leaf holds: on a small table it can forbid
    #: every split, and the model is a constant (the gate names it then).
    leaf_param: str | None = None

    def describe(self) -> str:
        return f"{self.name} ({self.family}: {', '.join(sorted(t.value for t in self.tasks))})"

    def parse_params(self, raw: Any, where: str) -> Any:
        """This estimator's ``params.yaml`` block as its params dataclass."""
        from pipeline.config import build_dataclass

        return build_dataclass(self.params_type, raw, where)

    def refuse(self, params: Any, task: Task) -> str | None:
        """Why ``params`` cannot be trained or exported for ``task``, or None if they can."""
        if task not in self.tasks:
            others = [e.name for e in ESTIMATORS.values() if task in e.tasks]
            return (
                f"train.estimator '{self.name}' does not support a {task.value} task "
                f"(it supports {', '.join(sorted(t.value for t in self.tasks))}). "
                f"Estimators for {task.value}: {', '.join(others)}."
            )
        return None

    def check(self, params: Any, task: Task) -> None:
        """Raise :class:`PipelineError` with :meth:`refuse`'s reason, if any."""
        reason = self.refuse(params, task)
        if reason:
            raise PipelineError(reason)

    def parity_tolerance(self, task: Task) -> float:
        """Largest :func:`parity_error` allowed between the native model and its exports."""
        return PROBABILITY_TOLERANCE if task.is_classification else REGRESSION_TOLERANCE

    def fit(
        self, params: Any, task: Task, seed: int, x_train, y_train, x_val, y_val, classes
    ) -> Fitted:
        raise NotImplementedError

    def predict_output(self, model: Any, features: np.ndarray, task: Task) -> np.ndarray:
        """Probabilities ``[N, C]`` (classes in sorted order) or predictions ``[N]``."""
        raise NotImplementedError

    def save(self, model: Any, directory: Path) -> None:
        raise NotImplementedError

    def load(self, directory: Path) -> Any:
        raise NotImplementedError

    def onnx_graph(self, native: Any, opset: int):
        """The ONNX graph of a :class:`~pipeline.model.NativeModel` of this estimator, as the
        converter left it; :func:`pipeline.onnx_export.to_onnx` fixes names and outputs."""
        raise NotImplementedError


def _history_row(task: Task, y_val, output, classes) -> dict[str, float]:
    from pipeline.metrics import compute_metrics

    m = compute_metrics(task, y_val, output, classes)
    if task.is_regression:
        return {
            "val_loss": m["rmse"],
            "val_score": m["r2"],
            "val_rmse": m["rmse"],
            "val_mae": m["mae"],
            "val_r2": m["r2"],
        }
    return {
        "val_loss": m["log_loss"],
        "val_score": m["accuracy"],
        "val_accuracy": m["accuracy"],
        "val_log_loss": m["log_loss"],
    }


def _val_metrics(history: pd.DataFrame, row: int) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in history.iloc[row].items()
        if k.startswith("val_") and k not in ("val_loss", "val_score")
    }


def _one_thread():
    """One OpenMP/BLAS thread, as every estimator here runs (``n_jobs=1``): on a shared
    machine HistGradientBoosting's OpenMP threads otherwise spin against other processes
    (measured: 142 s instead of about 2 s to fit the default data with the load at 10)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


# ---------------------------------------------------------------------------- scikit-learn API
@dataclass(frozen=True, eq=False)
class SklearnApiEstimator(Estimator):
    """An estimator with scikit-learn's fit/predict(_proba) API, saved with joblib and
    converted by skl2onnx (with a converter registered for the non-scikit-learn ones)."""

    name: str
    family: str
    tasks: frozenset[Task]
    params_type: type
    #: (params, task, seed) -> an unfitted estimator.
    build: Callable[[Any, Task, int], Any]
    #: A tree ensemble that compares in float32 in ONNX (the graph casts the features to
    #: float32 before the model). The native model is then fitted and run on float32-rounded
    #: features too (scikit-learn's trees do this themselves; LightGBM would otherwise compare
    #: float64 features with float64 thresholds and split rows near a threshold differently
    #: from the graph: measured up to 1.3 on the diabetes target without it).
    float32_trees: bool = False
    #: Registers skl2onnx converters for this library (called before converting).
    register_converter: Callable[[], None] | None = None
    #: Extra refusals, after the task check: (params, task) -> reason or None.
    refuse_params: Callable[[Any, Task], str | None] | None = None
    artifact: str = "estimator.joblib"
    saved_model: bool = False
    mlflow_flavor: str = "sklearn"
    requirements: tuple[str, ...] = ("scikit-learn",)
    regularisers: str = ""
    leaf_param: str | None = None

    def refuse(self, params: Any, task: Task) -> str | None:
        reason = super().refuse(params, task)
        if reason is None and self.refuse_params is not None:
            reason = self.refuse_params(params, task)
        return reason

    def parity_tolerance(self, task: Task) -> float:
        if task.is_regression and self.float32_trees:
            return FLOAT32_TREE_REGRESSION_TOLERANCE
        return super().parity_tolerance(task)

    def _features(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float32) if self.float32_trees else features

    def predict_output(self, model: Any, features: np.ndarray, task: Task) -> np.ndarray:
        features = self._features(features)
        with _one_thread():
            if task.is_regression:
                return np.asarray(model.predict(features), dtype=np.float64).reshape(-1)
            return np.asarray(model.predict_proba(features), dtype=np.float64)

    def _target(self, task: Task, y, classes):
        if task.is_regression:
            return np.asarray(y, dtype=np.float64)
        # Integer codes in sorted class order: every library then agrees on the column order
        # of predict_proba, and XGBoost (which refuses string labels) works too.
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[str(v)] for v in y], dtype=np.int64)

    def fit(
        self, params: Any, task: Task, seed: int, x_train, y_train, x_val, y_val, classes
    ) -> Fitted:
        from sklearn.base import clone

        estimator = self.build(params, task, seed)
        y_fit = self._target(task, y_train, classes)
        x_train = self._features(x_train)
        rows = []
        # A learning curve stands in for "iterations": validation scores as the training set
        # grows, so a run shows whether more data would still help.
        for share in (0.25, 0.5, 0.75, 1.0):
            n = max(len(classes or ()) * 2, 2, int(round(share * len(x_train))))
            if n < len(x_train):
                order = np.random.default_rng(seed).permutation(len(x_train))[:n]
                if task.is_classification and len(set(y_fit[order])) < len(classes):
                    continue
                with _one_thread():
                    fitted = clone(estimator).fit(x_train[order], y_fit[order])
            else:
                n = len(x_train)
                with _one_thread():
                    fitted = estimator.fit(x_train, y_fit)
            output = self.predict_output(fitted, x_val, task)
            rows.append(
                {"step": len(rows), "train_rows": n} | _history_row(task, y_val, output, classes)
            )
        history = pd.DataFrame(rows)
        return Fitted(estimator, history, _val_metrics(history, -1))

    def save(self, model: Any, directory: Path) -> None:
        import joblib

        joblib.dump(model, Path(directory) / self.artifact)

    def load(self, directory: Path) -> Any:
        import joblib

        return joblib.load(Path(directory) / self.artifact)

    def onnx_graph(self, native: Any, opset: int):
        from pipeline import onnx_export

        if self.register_converter is not None:
            self.register_converter()
        # Classifiers: probabilities as a plain tensor, not ZipMap's list of dicts.
        options = {"zipmap": False} if native.task.is_classification else None
        return onnx_export.sklearn_graph(native, opset, float32=self.float32_trees, options=options)


# ---------------------------------------------------------------------------- Keras
def import_keras():
    """Import Keras quietly: no C++ log lines, no progress bars in a pipeline's output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import absl.logging
    import keras

    absl.logging.set_verbosity(absl.logging.ERROR)
    keras.utils.disable_interactive_logging()
    return keras


@dataclass(frozen=True, eq=False)
class KerasMLPEstimator(Estimator):
    """A Keras multilayer perceptron; early stopping on the validation split.

    Classification: softmax over the sorted classes, sparse categorical cross-entropy.
    Regression: one linear unit, mean squared error, and a final fixed ``Rescaling`` layer
    (training mean and standard deviation of the target), so the network learns a
    standardised target but outputs the real one; it exports to ONNX as a Mul and an Add.
    """

    name: str = "keras_mlp"
    family: str = "keras"
    tasks: frozenset[Task] = ALL_TASKS
    params_type: type = KerasMLPParams
    artifact: str = "network.keras"
    saved_model: bool = True
    mlflow_flavor: str = "tensorflow"
    requirements: tuple[str, ...] = ("tensorflow-cpu", "keras")
    regularisers: str = "dropout, epochs"

    def fit(
        self, params: Any, task: Task, seed: int, x_train, y_train, x_val, y_val, classes
    ) -> Fitted:
        keras = import_keras()
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        p = params
        if task.is_regression:
            y_fit = np.asarray(y_train, dtype=np.float32)
            y_check = np.asarray(y_val, dtype=np.float32)
        else:
            index = {c: i for i, c in enumerate(classes)}
            y_fit = np.array([index[str(v)] for v in y_train])
            y_check = np.array([index[str(v)] for v in y_val])

        # Fixed layer names and a fresh session: Keras numbers unnamed layers per process
        # ("dense_2_1"), which would end up in the ONNX graph and change its bytes.
        keras.backend.clear_session()
        # clear_session resets Keras's global state, its quiet mode included: without this,
        # MLflow's check of the logged model's input example printed a progress bar.
        keras.utils.disable_interactive_logging()
        layers: list[Any] = [keras.Input(shape=(x_train.shape[1],), name="features")]
        for i, units in enumerate(p.hidden_units):
            layers.append(keras.layers.Dense(units, activation="relu", name=f"hidden_{i}"))
            if p.dropout > 0:
                layers.append(keras.layers.Dropout(p.dropout, seed=seed, name=f"dropout_{i}"))
        if task.is_regression:
            mean, std = float(np.mean(y_fit)), float(np.std(y_fit)) or 1.0
            layers.append(keras.layers.Dense(1, name="standardised"))
            layers.append(keras.layers.Rescaling(scale=std, offset=mean, name="prediction"))
            loss, metrics = "mean_squared_error", []
        else:
            layers.append(
                keras.layers.Dense(len(classes), activation="softmax", name="probabilities")
            )
            loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
        network = keras.Sequential(layers, name="keras_mlp")
        network.compile(
            optimizer=keras.optimizers.Adam(learning_rate=p.learning_rate),
            loss=loss,
            metrics=metrics,
        )
        stop = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=p.patience, restore_best_weights=True
        )
        fit = network.fit(
            x_train.astype("float32"),
            y_fit,
            validation_data=(x_val.astype("float32"), y_check),
            epochs=p.epochs,
            batch_size=p.batch_size,
            shuffle=True,
            callbacks=[stop],
            verbose=0,
        )
        history = pd.DataFrame(fit.history)
        if not np.isfinite(history["val_loss"]).any():
            raise PipelineError(
                f"keras_mlp did not train: its validation loss was NaN or infinite in every one "
                f"of {len(history)} epoch(s), so the network diverged. Lower "
                f"train.params.learning_rate (now {p.learning_rate}), or look for extreme "
                "values in the features or the target."
            )
        history.insert(0, "step", range(len(history)))
        if task.is_regression:
            variance = float(np.var(y_check)) or 1.0
            history["train_rmse"] = np.sqrt(history.pop("loss"))
            history["val_rmse"] = np.sqrt(history["val_loss"])
            history["val_r2"] = 1.0 - history["val_loss"] / variance
            history["val_loss"] = history["val_rmse"]
            history["val_score"] = history["val_r2"]
            best = int(history["val_rmse"].idxmin())
            final = _history_row(task, y_val, self.predict_output(network, x_val, task), classes)
            val_metrics = {k: v for k, v in final.items() if k not in ("val_loss", "val_score")}
        else:
            history = history.rename(columns={"accuracy": "train_accuracy", "loss": "train_loss"})
            history["val_log_loss"] = history["val_loss"]
            history["val_score"] = history["val_accuracy"]
            best = int(history["val_log_loss"].idxmin())
            val_metrics = {
                "val_accuracy": float(history.loc[best, "val_accuracy"]),
                "val_log_loss": float(history.loc[best, "val_log_loss"]),
            }
        val_metrics["best_epoch"] = best
        return Fitted(network, history, val_metrics)

    def predict_output(self, model: Any, features: np.ndarray, task: Task) -> np.ndarray:
        out = np.asarray(model(np.asarray(features, dtype=np.float32), training=False))
        out = out.astype(np.float64)
        return out.reshape(-1) if task.is_regression else out

    def save(self, model: Any, directory: Path) -> None:
        model.save(Path(directory) / self.artifact)

    def load(self, directory: Path) -> Any:
        keras = import_keras()
        return keras.models.load_model(Path(directory) / self.artifact)

    def onnx_graph(self, native: Any, opset: int):
        from pipeline import onnx_export

        return onnx_export.keras_graph(native, opset)


# ---------------------------------------------------------------------------- builders
def _logistic_regression(p: LogisticRegressionParams, task: Task, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=p.C, max_iter=p.max_iter, random_state=seed)


def _ridge(p: RidgeParams, task: Task, seed: int):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=p.alpha)


def _random_forest(p: RandomForestParams, task: Task, seed: int):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestRegressor if task.is_regression else RandomForestClassifier
    return cls(
        n_estimators=p.n_estimators,
        max_depth=p.max_depth,
        min_samples_leaf=p.min_samples_leaf,
        random_state=seed,
        n_jobs=1,
    )


def _hist_gradient_boosting(p: HistGradientBoostingParams, task: Task, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingRegressor if task.is_regression else HistGradientBoostingClassifier
    return cls(
        max_iter=p.max_iter,
        learning_rate=p.learning_rate,
        max_leaf_nodes=p.max_leaf_nodes,
        min_samples_leaf=p.min_samples_leaf,
        l2_regularization=p.l2_regularization,
        early_stopping=False,  # the validation split is ours; no hidden inner split
        random_state=seed,
    )


def _lightgbm(p: LightGBMParams, task: Task, seed: int):
    import lightgbm

    cls = lightgbm.LGBMRegressor if task.is_regression else lightgbm.LGBMClassifier
    return cls(
        n_estimators=p.n_estimators,
        learning_rate=p.learning_rate,
        num_leaves=p.num_leaves,
        min_child_samples=p.min_child_samples,
        subsample=p.subsample,
        subsample_freq=1 if p.subsample < 1 else 0,
        colsample_bytree=p.colsample_bytree,
        reg_lambda=p.reg_lambda,
        random_state=seed,
        n_jobs=1,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )


def _xgboost(p: XGBoostParams, task: Task, seed: int):
    import xgboost

    cls = xgboost.XGBRegressor if task.is_regression else xgboost.XGBClassifier
    extra = {"objective": p.objective} if p.objective else {}
    return cls(
        n_estimators=p.n_estimators,
        learning_rate=p.learning_rate,
        max_depth=p.max_depth,
        subsample=p.subsample,
        colsample_bytree=p.colsample_bytree,
        reg_lambda=p.reg_lambda,
        tree_method="hist",
        random_state=seed,
        n_jobs=1,
        **extra,
    )


def _refuse_xgboost(p: XGBoostParams, task: Task) -> str | None:
    objective = p.objective or ""
    if task.is_regression and objective.startswith(("binary:", "multi:")):
        return (
            f"train.xgboost.objective is '{objective}', a classification objective, but the "
            "task is regression. onnxmltools 1.16 converts an XGBRegressor with a "
            "'binary:logistic' objective wrongly (the ONNX output differs by up to 8.4), so this "
            "combination is refused rather than exported; use a 'reg:' objective (or null for "
            "'reg:squarederror')."
        )
    if task.is_classification and objective.startswith(("reg:", "count:", "survival:", "rank:")):
        return (
            f"train.xgboost.objective is '{objective}', but the task is {task.value} "
            "classification; use null (the classifier's default) or a 'binary:'/'multi:' one."
        )
    return None


def _convert_lightgbm(scope, operator, container) -> None:
    """onnxmltools' LightGBM converter, fed thresholds that split float32 inputs exactly as
    LightGBM splits them (``onnx_export.float32_threshold``)."""
    from onnxmltools.convert.lightgbm.operator_converters import LightGbm

    from pipeline.onnx_export import float32_threshold

    dump = LightGbm.dump_booster_model

    def exact_dump(booster, **kwargs):
        model, info = dump(booster, **kwargs)
        pending = [tree["tree_structure"] for tree in model["tree_info"]]
        while pending:
            node = pending.pop()
            if "threshold" in node and node.get("decision_type") in ("<=", "<"):
                node["threshold"] = float32_threshold(node["threshold"], node["decision_type"])
            pending += [node[k] for k in ("left_child", "right_child") if k in node]
        return model, info

    LightGbm.dump_booster_model = exact_dump
    try:
        LightGbm.convert_lightgbm(scope, operator, container)
    finally:
        LightGbm.dump_booster_model = dump


def _ints_not_bools(container) -> Any:
    """Wrap ``container.add_node`` so list attributes hold ints, not bools or numpy ints.

    skl2onnx 1.20's HistGradientBoosting converter writes ``missing_go_to_left`` flags as
    bools, which onnx 1.23 refuses (``AttributeProto.ints: Expected an int, got a boolean``):
    that is the conversion failure measured with these versions."""
    add_node = container.add_node

    def fixed(*args, **attrs):
        for key, value in attrs.items():
            if isinstance(value, list) and any(isinstance(v, bool | np.bool_) for v in value):
                attrs[key] = [int(v) for v in value]
        return add_node(*args, **attrs)

    container.add_node = fixed
    return add_node


def _register_hist_gradient_boosting() -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    def wrap(convert):
        def converter(scope, operator, container):
            import copy

            fitted = operator.raw_operator
            # Thresholds that split float32 inputs as the float64 ones do (the graph is float32).
            exact = copy.deepcopy(fitted)
            for predictors in exact._predictors:
                for predictor in predictors:
                    t = predictor.nodes["num_threshold"]
                    v = t.astype(np.float32)
                    up = v.astype(np.float64) > t
                    v[up] = np.nextafter(v[up], np.float32(-np.inf))
                    predictor.nodes["num_threshold"] = v.astype(np.float64)
            operator.raw_operator = exact
            original = _ints_not_bools(container)
            try:
                convert(scope, operator, container)
            finally:
                container.add_node = original
                operator.raw_operator = fitted

        return converter

    update_registered_converter(
        HistGradientBoostingClassifier,
        "SklearnHistGradientBoostingClassifier",
        calculate_linear_classifier_output_shapes,
        wrap(convert_sklearn_random_forest_classifier),
        options={
            "zipmap": [True, False, "columns"],
            "raw_scores": [True, False],
            "output_class_labels": [False, True],
            "nocl": [True, False],
        },
    )
    update_registered_converter(
        HistGradientBoostingRegressor,
        "SklearnHistGradientBoostingRegressor",
        calculate_linear_regressor_output_shapes,
        wrap(convert_sklearn_random_forest_regressor_converter),
        options={"raw_scores": [True, False]},
    )


def _register_lightgbm() -> None:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        _convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        _convert_lightgbm,
        options={"split": None},
    )


def _register_xgboost() -> None:
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        XGBRegressor,
        "XGBoostXGBRegressor",
        calculate_linear_regressor_output_shapes,
        convert_xgboost,
    )


# ---------------------------------------------------------------------------- the table
_ENTRIES: tuple[Estimator, ...] = (
    SklearnApiEstimator(
        name="logistic_regression",
        family="sklearn",
        tasks=CLASSIFICATION,
        params_type=LogisticRegressionParams,
        build=_logistic_regression,
        regularisers="a smaller C",
    ),
    SklearnApiEstimator(
        name="ridge",
        family="sklearn",
        tasks=REGRESSION,
        params_type=RidgeParams,
        build=_ridge,
    ),
    SklearnApiEstimator(
        name="random_forest",
        family="sklearn",
        tasks=ALL_TASKS,
        params_type=RandomForestParams,
        build=_random_forest,
        float32_trees=True,
        regularisers="min_samples_leaf, max_depth",
        leaf_param="min_samples_leaf",
    ),
    SklearnApiEstimator(
        name="hist_gradient_boosting",
        family="sklearn",
        tasks=ALL_TASKS,
        params_type=HistGradientBoostingParams,
        build=_hist_gradient_boosting,
        float32_trees=True,
        register_converter=_register_hist_gradient_boosting,
        regularisers="min_samples_leaf, max_leaf_nodes, l2_regularization",
        leaf_param="min_samples_leaf",
    ),
    SklearnApiEstimator(
        name="lightgbm",
        family="lightgbm",
        tasks=ALL_TASKS,
        params_type=LightGBMParams,
        build=_lightgbm,
        float32_trees=True,
        register_converter=_register_lightgbm,
        requirements=("scikit-learn", "lightgbm"),
        regularisers="min_child_samples, num_leaves, reg_lambda",
        leaf_param="min_child_samples",
    ),
    SklearnApiEstimator(
        name="xgboost",
        family="xgboost",
        tasks=ALL_TASKS,
        params_type=XGBoostParams,
        build=_xgboost,
        float32_trees=True,
        register_converter=_register_xgboost,
        refuse_params=_refuse_xgboost,
        requirements=("scikit-learn", "xgboost-cpu"),
        regularisers="max_depth, reg_lambda",
    ),
    KerasMLPEstimator(),
)

#: Estimator name -> entry.
ESTIMATORS: dict[str, Estimator] = {e.name: e for e in _ENTRIES}


def get_estimator(name: str) -> Estimator:
    """The entry for ``name``; an unknown name is a :class:`PipelineError` listing the known."""
    try:
        return ESTIMATORS[name]
    except (KeyError, TypeError):
        known = ", ".join(e.describe() for e in ESTIMATORS.values())
        raise PipelineError(f"train.estimator is '{name}'; expected one of: {known}.") from None
