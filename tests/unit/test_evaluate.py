import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.stages.evaluate import (
    compute_metrics,
    curve_tables,
    draw_figures,
    draw_regression_figures,
    regression_tables,
)

CLASSES = ["a", "b", "c"]


def test_perfect_predictions():
    y = np.array(["a", "b", "c", "a"])
    proba = np.eye(3)[[0, 1, 2, 0]] * 0.98 + 0.01 / 1.5
    metrics = compute_metrics(y, proba / proba.sum(1, keepdims=True), CLASSES)
    assert metrics["accuracy"] == 1.0
    assert metrics["f1_macro"] == 1.0
    assert metrics["roc_auc_ovr"] == 1.0
    assert 0 < metrics["log_loss"] < 0.05
    assert metrics["rows"] == 4


def test_known_values():
    y = np.array(["a", "a", "b", "c"])
    proba = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]])
    metrics = compute_metrics(y, proba, CLASSES)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # per class F1: a = 2/3 (P 1, R .5), b = 2/3 (P .5, R 1), c = 1
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    expected = -np.mean(np.log([0.6, 0.2, 0.4, 0.8]))
    assert metrics["log_loss"] == pytest.approx(expected)


def test_unknown_label_is_named():
    with pytest.raises(PipelineError, match=r"labels \['z'\] are not among"):
        compute_metrics(np.array(["a", "z"]), np.full((2, 3), 1 / 3), CLASSES)


def test_curves_and_figures():
    rng = np.random.default_rng(0)
    y = np.array(CLASSES * 10)
    proba = rng.dirichlet([1, 1, 1], size=30)
    confusion, roc, pr = curve_tables(y, proba, CLASSES)
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 30
    assert set(roc) == set(pr) == set(CLASSES)
    assert roc["a"]["fpr"].iloc[0] == 0 and roc["a"]["tpr"].iloc[-1] == 1
    figures = draw_figures(confusion, roc, pr, CLASSES, compute_metrics(y, proba, CLASSES))
    assert set(figures) == {"confusion_matrix.png", "roc.png", "precision_recall.png"}


def test_regression_tables_and_figures():
    y = np.array([10.0, 20.0, 30.0, 40.0])
    predicted = np.array([12.0, 18.0, 33.0, 40.0])
    pairs, residuals = regression_tables(y, predicted)
    assert list(pairs.columns) == ["actual", "predicted"]
    assert list(residuals.columns) == ["predicted", "residual"]
    np.testing.assert_allclose(residuals["residual"], [-2.0, 2.0, -3.0, 0.0])
    metrics = {"r2": 0.97, "rmse": 2.06, "mae": 1.75}
    figures = draw_regression_figures(pairs, residuals, metrics)
    assert set(figures) == {"predicted_vs_actual.png", "residuals.png"}
    assert "R² 0.970" in figures["predicted_vs_actual.png"].axes[0].get_title()


def test_figures_stay_out_of_pyplot(tmp_path):
    """A process that evaluates many times (the test suite, a notebook) keeps no figure open:
    pyplot's registry warned "More than 20 figures" and held every figure's memory."""
    import matplotlib.pyplot as plt

    pairs, residuals = regression_tables(np.arange(5.0), np.arange(5.0) + 0.5)
    before = plt.get_fignums()
    for _ in range(25):
        figures = draw_regression_figures(pairs, residuals, {"r2": 0.9, "rmse": 0.5, "mae": 0.5})
    assert plt.get_fignums() == before
    figures["residuals.png"].savefig(tmp_path / "residuals.png")
    assert (tmp_path / "residuals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
