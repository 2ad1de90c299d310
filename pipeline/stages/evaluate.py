"""``evaluate``: test-split metrics, curve data for ``dvc plots`` and figures for people.

Writes ``metrics.json`` (DVC metrics; :func:`pipeline.metrics.compute_metrics` of the task),
curve data under ``--plots`` (DVC plots) and PNG figures under ``--figures``, and logs all of
it to the pipeline's MLflow run:

* classification: ``confusion/confusion.csv`` (actual, predicted pairs), one-vs-rest
  ``roc/<class>.csv`` and ``precision_recall/<class>.csv``; figures ``confusion_matrix.png``,
  ``roc.png``, ``precision_recall.png``;
* regression: ``predicted_vs_actual/predicted_vs_actual.csv`` (actual, predicted) and
  ``residuals/residuals.csv`` (predicted, residual = actual - predicted); figures
  ``predicted_vs_actual.png`` and ``residuals.png``.

Every plot directory is written for every task (the other task's stay empty), so the
``plots:`` of ``dvc.yaml`` can name them all and ``dvc plots show`` loads all of them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from model_spec.task import Task
from pipeline import metrics as task_metrics
from pipeline.config import load_params
from pipeline.contract import load_contract
from pipeline.errors import PipelineError, cli
from pipeline.frames import category_text
from pipeline.io import atomic_path, read_table, write_json
from pipeline.model import RUN_FILE, load_native_model
from pipeline.tracking import resume_run

#: Sub-directories of the plots directory, one per DVC plot (see the module docstring).
PLOT_DIRS = ("confusion", "roc", "precision_recall", "predicted_vs_actual", "residuals")


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Classification metrics; kept for callers written before :mod:`pipeline.metrics`
    (use ``pipeline.metrics.compute_metrics(task, y_true, output, classes)``)."""
    task = Task.BINARY if len(classes) == 2 else Task.MULTICLASS
    return task_metrics.compute_metrics(task, y_true, proba, classes)


def curve_tables(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str]
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Confusion pairs, and one-vs-rest ROC and precision-recall points per class."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    y_true = np.asarray(y_true).astype(str)
    predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)].astype(str)
    confusion = pd.DataFrame({"actual": y_true, "predicted": predicted})
    roc, pr = {}, {}
    for i, name in enumerate(classes):
        positive = y_true == name
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, i])
        precision, recall, _ = precision_recall_curve(positive, proba[:, i])
        roc[name] = pd.DataFrame({"fpr": fpr, "tpr": tpr})
        pr[name] = pd.DataFrame({"recall": recall, "precision": precision})
    return confusion, roc, pr


def _figure():
    """A figure and its axes outside pyplot's registry: nothing to close, no display needed,
    and no "More than 20 figures" warning in a process that draws many."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.2), dpi=110)
    return fig, fig.subplots()


def draw_figures(
    confusion: pd.DataFrame,
    roc: dict[str, pd.DataFrame],
    pr: dict[str, pd.DataFrame],
    classes: list[str],
    metrics: dict[str, float],
):
    """Confusion matrix, ROC and precision-recall figures (matplotlib, no display needed)."""
    from sklearn.metrics import confusion_matrix

    figures = {}
    matrix = confusion_matrix(confusion["actual"], confusion["predicted"], labels=classes)
    fig, ax = _figure()
    image = ax.imshow(matrix, cmap="Blues")
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="actual",
        title=f"Confusion matrix (test, accuracy {metrics['accuracy']:.3f})",
    )
    for (r, c), value in np.ndenumerate(matrix):
        shade = "white" if value > matrix.max() / 2 else "black"
        ax.text(c, r, str(value), ha="center", va="center", color=shade)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    figures["confusion_matrix.png"] = fig

    for key, curves, x, y, title, diagonal in (
        ("roc.png", roc, "fpr", "tpr", f"ROC one-vs-rest (AUC {metrics['roc_auc_ovr']:.3f})", True),
        ("precision_recall.png", pr, "recall", "precision", "Precision-recall one-vs-rest", False),
    ):
        fig, ax = _figure()
        for name, points in curves.items():
            ax.plot(points[x], points[y], label=name, drawstyle="steps-post")
        if diagonal:
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set(xlabel=x, ylabel=y, title=title, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.legend(loc="lower right" if diagonal else "lower left")
        fig.tight_layout()
        figures[key] = fig
    return figures


def regression_tables(
    y_true: np.ndarray, predicted: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predicted-vs-actual pairs and residuals (actual - predicted) against the prediction."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    return (
        pd.DataFrame({"actual": y, "predicted": p}),
        pd.DataFrame({"predicted": p, "residual": y - p}),
    )


def draw_regression_figures(
    pairs: pd.DataFrame, residuals: pd.DataFrame, metrics: dict[str, float]
):
    """Predicted vs actual (with the identity line) and residuals vs predicted."""

    figures = {}
    fig, ax = _figure()
    ax.scatter(pairs["actual"], pairs["predicted"], s=10, alpha=0.6)
    low = float(min(pairs["actual"].min(), pairs["predicted"].min()))
    high = float(max(pairs["actual"].max(), pairs["predicted"].max()))
    ax.plot([low, high], [low, high], linestyle=":", color="grey")
    ax.set(
        xlabel="actual",
        ylabel="predicted",
        title=f"Predicted vs actual (test, R² {metrics['r2']:.3f}, RMSE {metrics['rmse']:.3g})",
    )
    fig.tight_layout()
    figures["predicted_vs_actual.png"] = fig

    fig, ax = _figure()
    ax.scatter(residuals["predicted"], residuals["residual"], s=10, alpha=0.6)
    ax.axhline(0.0, linestyle=":", color="grey")
    ax.set(
        xlabel="predicted",
        ylabel="residual (actual - predicted)",
        title=f"Residuals (test, MAE {metrics['mae']:.3g})",
    )
    fig.tight_layout()
    figures["residuals.png"] = fig
    return figures


def evaluate_model(model, test: pd.DataFrame, target: str):
    """Metrics, plot tables (``{relative path: frame}``) and figures of ``model`` on ``test``."""
    task = model.task
    output = model.predict_output(test)
    if task.is_regression:
        y_true = pd.to_numeric(test[target], errors="coerce").to_numpy(dtype=np.float64)
        metrics = task_metrics.compute_metrics(task, y_true, output)
        pairs, residuals = regression_tables(y_true, output)
        tables = {
            "predicted_vs_actual/predicted_vs_actual.csv": pairs,
            "residuals/residuals.csv": residuals,
        }
        return metrics, tables, draw_regression_figures(pairs, residuals, metrics)
    y_true = category_text(test[target]).to_numpy(dtype=object)
    metrics = task_metrics.compute_metrics(task, y_true, output, model.classes)
    confusion, roc, pr = curve_tables(y_true, output, model.classes)
    tables = {"confusion/confusion.csv": confusion}
    for name in roc:
        tables[f"roc/{_slug(name)}.csv"] = roc[name]
        tables[f"precision_recall/{_slug(name)}.csv"] = pr[name]
    return metrics, tables, draw_figures(confusion, roc, pr, model.classes, metrics)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@cli("evaluate")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--test", required=True, help="test split (Parquet)")
    parser.add_argument("--train-dir", required=True)
    parser.add_argument("--preprocessor", required=True)
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--plots", required=True, help="dir for curve data (DVC plots)")
    parser.add_argument("--figures", required=True, help="dir for PNG figures")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    contract = load_contract(params.data.contract)
    test = read_table(args.test)
    if test.empty:
        raise PipelineError(f"test split '{args.test}' is empty.")
    model = load_native_model(args.train_dir, args.preprocessor, contract)
    metrics, tables, figures = evaluate_model(model, test, contract.target)

    with atomic_path(args.plots) as tmp:
        for sub in PLOT_DIRS:
            (tmp / sub).mkdir(parents=True)
        for name, frame in tables.items():
            frame.to_csv(tmp / name, index=False)
    with atomic_path(args.figures) as tmp:
        tmp.mkdir()
        for name, fig in figures.items():
            fig.savefig(tmp / name)
    write_json(args.metrics, metrics)

    import mlflow

    with resume_run(Path(args.train_dir) / RUN_FILE, params.mlflow.experiment):
        mlflow.log_metrics(
            {f"test_{k}": v for k, v in metrics.items() if k != "rows" and np.isfinite(v)}
        )
        mlflow.log_artifact(args.metrics, artifact_path="evaluate")
        mlflow.log_artifacts(args.plots, artifact_path="evaluate/plots")
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"evaluate/figures/{name}")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "rows")
    print(f"evaluate: {model.task.value}, test {shown} ({metrics['rows']} rows) -> {args.metrics}")


if __name__ == "__main__":
    raise SystemExit(main())
