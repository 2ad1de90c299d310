"""pipeline.metrics: the metrics of every task, their direction, and the trivial baseline."""

import numpy as np
import pytest

from model_spec.task import Task
from pipeline.errors import PipelineError
from pipeline.metrics import (
    baseline_output,
    compute_metrics,
    higher_is_better,
    metric_names,
)

CLASSES = ["a", "b", "c"]


def test_multiclass_known_values():
    y = np.array(["a", "a", "b", "c"])
    proba = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]])
    m = compute_metrics(Task.MULTICLASS, y, proba, CLASSES)
    assert set(m) == set(metric_names(Task.MULTICLASS)) | {"rows"}
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.6, 0.2, 0.4, 0.8])))
    assert m["rows"] == 4
    assert "roc_auc" not in m


def test_binary_adds_roc_auc_of_the_positive_class():
    y = np.array(["neg", "neg", "pos", "pos"])
    proba_pos = np.array([0.1, 0.6, 0.4, 0.9])
    proba = np.column_stack([1 - proba_pos, proba_pos])
    m = compute_metrics(Task.BINARY, y, proba, ["neg", "pos"])
    # pairs (pos, neg): (0.4 > 0.1), (0.4 < 0.6), (0.9 > both) -> 3 of 4
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["roc_auc_ovr"] == pytest.approx(0.75)
    assert 0 < m["average_precision"] <= 1


def test_regression_known_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([1.5, 2.0, 2.0, 5.0])
    m = compute_metrics(Task.REGRESSION, y, predicted)
    assert set(m) == set(metric_names(Task.REGRESSION)) | {"rows"}
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert m["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert m["r2"] == pytest.approx(1 - 2.25 / 5.0)
    assert m["max_error"] == pytest.approx(1.0)
    assert m["median_ae"] == pytest.approx(0.75)
    assert m["mape"] == pytest.approx(np.mean([0.5, 0, 1 / 3, 0.25]))


def test_a_perfect_regression():
    y = np.array([3.0, -1.0, 7.5])
    m = compute_metrics(Task.REGRESSION, y, y.copy())
    assert m["rmse"] == 0 and m["mae"] == 0 and m["r2"] == 1.0


@pytest.mark.parametrize(
    "metric, better",
    [("f1_macro", True), ("roc_auc_ovr", True), ("r2", True), ("accuracy", True)]
    + [("rmse", False), ("mae", False), ("log_loss", False), ("mape", False)],
)
def test_direction(metric, better):
    assert higher_is_better(metric) is better


def test_baselines_score_as_trivial_models():
    y_train = np.array(["a"] * 6 + ["b"] * 3 + ["c"])
    proba = baseline_output(Task.MULTICLASS, y_train, 4, CLASSES)
    np.testing.assert_allclose(proba, [[0.6, 0.3, 0.1]] * 4)
    m = compute_metrics(Task.MULTICLASS, ["a", "b", "c", "a"], proba, CLASSES)
    assert m["accuracy"] == 0.5  # always the majority class
    assert m["roc_auc_ovr"] == pytest.approx(0.5)  # no ranking at all

    mean = baseline_output(Task.REGRESSION, [1.0, 2.0, 6.0], 2)
    np.testing.assert_allclose(mean, [3.0, 3.0])
    assert compute_metrics(Task.REGRESSION, [3.0, 5.0], mean)["mae"] == pytest.approx(1.0)


def test_bad_inputs_are_one_sentence():
    with pytest.raises(PipelineError, match=r"labels \['z'\] are not among"):
        compute_metrics(Task.MULTICLASS, np.array(["a", "z"]), np.full((2, 3), 1 / 3), CLASSES)
    with pytest.raises(PipelineError, match=r"shape \[2, 2\]; expected \[2, 3\]"):
        compute_metrics(Task.MULTICLASS, np.array(["a", "b"]), np.full((2, 2), 0.5), CLASSES)
    with pytest.raises(PipelineError, match="must be numbers"):
        compute_metrics(Task.REGRESSION, np.array(["x", "y"]), np.zeros(2))
    with pytest.raises(PipelineError, match="3 predictions for 2 actual values"):
        compute_metrics(Task.REGRESSION, np.zeros(2), np.zeros(3))
    with pytest.raises(PipelineError, match="needs the model's classes"):
        compute_metrics(Task.BINARY, np.array(["a"]), np.ones((1, 1)))
