"""Test metrics per task, and the trivial baseline the gate compares a candidate with.

One function scores a model's output whatever the task, so evaluate, the gate and the tests
agree on what ``f1_macro`` or ``rmse`` means:

* classification: ``output`` is the probabilities ``[N, C]``, columns in ``classes`` order;
  metrics ``accuracy``, ``balanced_accuracy``, ``precision_macro``, ``recall_macro``,
  ``f1_macro``, ``log_loss``, ``roc_auc_ovr`` (macro one-vs-rest over the classes present) and,
  for a binary task, ``roc_auc`` and ``average_precision`` of the second class (the positive
  one: classes are sorted, so for ``["0", "1"]`` it is ``"1"``);
* regression: ``output`` is the predictions ``[N]``; metrics ``rmse``, ``mae``, ``r2``,
  ``median_ae``, ``max_error`` and ``mape`` (mean absolute percentage error over the rows whose
  actual value is not zero).

Every result also holds ``rows``. :func:`baseline_output` is what a model that ignores its
inputs would output (the training prior / the training mean), in the same shape, so the gate
scores the baseline with :func:`compute_metrics` too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model_spec.task import Task
from pipeline.errors import PipelineError

#: Metrics where smaller is better; every other metric is better when larger.
LOWER_IS_BETTER = frozenset(
    {"log_loss", "rmse", "mae", "median_ae", "max_error", "mape", "mse", "brier"}
)
CLASSIFICATION_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "log_loss",
    "roc_auc_ovr",
)
BINARY_METRICS = CLASSIFICATION_METRICS + ("roc_auc", "average_precision")
REGRESSION_METRICS = ("rmse", "mae", "r2", "median_ae", "max_error", "mape")


def metric_names(task: Task) -> tuple[str, ...]:
    """The metrics :func:`compute_metrics` returns for ``task`` (besides ``rows``)."""
    if task.is_regression:
        return REGRESSION_METRICS
    return BINARY_METRICS if task is Task.BINARY else CLASSIFICATION_METRICS


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (``rmse``: no; ``f1_macro``: yes)."""
    return metric not in LOWER_IS_BETTER


def compute_metrics(
    task: Task, y_true, output, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """The test metrics of ``output`` against ``y_true`` (see the module docstring)."""
    if task.is_regression:
        return _regression_metrics(y_true, output)
    if not classes:
        raise PipelineError(f"a {task.value} task needs the model's classes to be scored.")
    return _classification_metrics(task, y_true, output, list(classes))


def _regression_metrics(y_true, output) -> dict[str, float]:
    from sklearn.metrics import max_error, mean_absolute_error, median_absolute_error, r2_score

    y = _numeric(y_true, "actual values")
    predicted = np.asarray(output, dtype=np.float64).reshape(-1)
    if predicted.shape != y.shape:
        raise PipelineError(f"{predicted.size} predictions for {y.size} actual values.")
    if y.size == 0:
        raise PipelineError("there are no rows to score.")
    nonzero = y != 0
    mape = (
        float(np.mean(np.abs((y[nonzero] - predicted[nonzero]) / y[nonzero])))
        if nonzero.any()
        else float("nan")
    )
    return {
        "rmse": float(np.sqrt(np.mean((y - predicted) ** 2))),
        "mae": float(mean_absolute_error(y, predicted)),
        # R² is undefined on a constant target; report 0 (no better than the mean) then.
        "r2": float(r2_score(y, predicted)) if np.ptp(y) > 0 else 0.0,
        "median_ae": float(median_absolute_error(y, predicted)),
        "max_error": float(max_error(y, predicted)),
        "mape": mape,
        "rows": int(y.size),
    }


def _normalised(proba: np.ndarray) -> np.ndarray:
    """Rows that sum to 1: a float32 softmax (Keras, ONNX) is off by about 1e-7, and
    scikit-learn's log loss warns about every such row ("y_prob values do not sum to one")."""
    clipped = np.clip(proba, 0.0, 1.0)
    sums = clipped.sum(axis=1, keepdims=True)
    return np.divide(clipped, sums, out=np.full_like(clipped, 1 / clipped.shape[1]), where=sums > 0)


def _classification_metrics(task: Task, y_true, proba, classes: list[str]) -> dict[str, float]:
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y_true).astype(str).reshape(-1)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (y.size, len(classes)):
        raise PipelineError(
            f"probabilities have shape {list(proba.shape)}; expected [{y.size}, {len(classes)}] "
            f"(rows, classes {classes})."
        )
    if y.size == 0:
        raise PipelineError("there are no rows to score.")
    unknown = sorted(str(v) for v in set(y) - set(classes))
    if unknown:
        raise PipelineError(f"labels {unknown} are not among the model's classes {classes}.")
    names = np.asarray(classes, dtype=object)
    predicted = names[proba.argmax(axis=1)].astype(str)
    onehot = (y[:, None] == np.asarray(classes)[None, :]).astype(int)
    present = onehot.sum(axis=0) > 0
    # ROC AUC needs both a positive and a negative row for every class it averages over.
    scorable = present & (onehot.sum(axis=0) < y.size)
    metrics = {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "precision_macro": float(precision_score(y, predicted, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(y, predicted, average="macro", zero_division=0)),
        "f1_macro": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y, _normalised(proba), labels=classes)),
        "roc_auc_ovr": (
            float(roc_auc_score(onehot[:, scorable], proba[:, scorable], average="macro"))
            if scorable.any()
            else float("nan")
        ),
    }
    if task is Task.BINARY:
        positive = onehot[:, -1]
        both = 0 < positive.sum() < y.size
        metrics["roc_auc"] = float(roc_auc_score(positive, proba[:, -1])) if both else float("nan")
        metrics["average_precision"] = (
            float(average_precision_score(positive, proba[:, -1])) if both else float("nan")
        )
    metrics["rows"] = int(y.size)
    return metrics


def baseline_output(
    task: Task, y_train, n_rows: int, classes: Sequence[str] | None = None
) -> np.ndarray:
    """What a model that ignores its inputs outputs for ``n_rows`` rows.

    Classification: the training split's class shares as probabilities ``[n_rows, C]`` (so its
    label is the majority class); regression: the training mean ``[n_rows]``.
    """
    if task.is_regression:
        y = _numeric(y_train, "training targets")
        return np.full(n_rows, float(np.mean(y)))
    if not classes:
        raise PipelineError(f"a {task.value} baseline needs the model's classes.")
    y = np.asarray(y_train).astype(str).reshape(-1)
    counts = np.array([(y == c).sum() for c in classes], dtype=np.float64)
    if counts.sum() == 0:
        raise PipelineError("the training split holds none of the model's classes.")
    return np.tile(counts / counts.sum(), (n_rows, 1))


def _numeric(values, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PipelineError(f"the {what} of a regression task must be numbers.") from None
    if np.isnan(array).any():
        raise PipelineError(f"the {what} hold {int(np.isnan(array).sum())} missing value(s).")
    return array
