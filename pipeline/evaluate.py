"""``evaluate``: test-split metrics, curve data for ``dvc plots`` and figures for people.

Writes ``metrics.json`` (DVC metrics), the confusion pairs and per-class ROC and
precision-recall points (DVC plots), PNG figures, and logs all of it to the pipeline's run.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import load_params
from pipeline.contract import load_contract
from pipeline.errors import PipelineError, cli
from pipeline.io import atomic_path, read_table, write_json
from pipeline.tracking import resume_run


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1, one-vs-rest macro ROC AUC and log loss."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y_true = np.asarray(y_true).astype(str)
    unknown = sorted(str(v) for v in set(y_true) - set(classes))
    if unknown:
        raise PipelineError(f"labels {unknown} are not among the model's classes {classes}.")
    predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)].astype(str)
    onehot = (y_true[:, None] == np.asarray(classes)[None, :]).astype(int)
    present = onehot.sum(axis=0) > 0
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "precision_macro": float(
            precision_score(y_true, predicted, average="macro", zero_division=0)
        ),
        "recall_macro": float(recall_score(y_true, predicted, average="macro", zero_division=0)),
        "f1_macro": float(f1_score(y_true, predicted, average="macro", zero_division=0)),
        # Classes absent from y_true have no ROC curve; average over those present.
        "roc_auc_ovr": float(roc_auc_score(onehot[:, present], proba[:, present], average="macro")),
        "log_loss": float(log_loss(y_true, proba, labels=classes)),
        "rows": int(len(y_true)),
    }


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


def draw_figures(
    confusion: pd.DataFrame,
    roc: dict[str, pd.DataFrame],
    pr: dict[str, pd.DataFrame],
    classes: list[str],
    metrics: dict[str, float],
):
    """Confusion matrix, ROC and precision-recall figures (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    figures = {}
    matrix = confusion_matrix(confusion["actual"], confusion["predicted"], labels=classes)
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=110)
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
        fig, ax = plt.subplots(figsize=(5, 4.2), dpi=110)
        for name, points in curves.items():
            ax.plot(points[x], points[y], label=name, drawstyle="steps-post")
        if diagonal:
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set(xlabel=x, ylabel=y, title=title, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.legend(loc="lower right" if diagonal else "lower left")
        fig.tight_layout()
        figures[key] = fig
    return figures


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

    from pipeline.train import RUN_FILE, load_native_model

    params = load_params(args.params)
    contract = load_contract(params.data.contract)
    test = read_table(args.test)
    if test.empty:
        raise PipelineError(f"test split '{args.test}' is empty.")
    model = load_native_model(args.train_dir, args.preprocessor, contract)
    proba = model.predict_proba(test)
    y_true = test[contract.target].astype(str).to_numpy()
    metrics = compute_metrics(y_true, proba, model.classes)
    confusion, roc, pr = curve_tables(y_true, proba, model.classes)
    figures = draw_figures(confusion, roc, pr, model.classes, metrics)

    with atomic_path(args.plots) as tmp:
        for sub in ("roc", "precision_recall"):
            (tmp / sub).mkdir(parents=True)
        confusion.to_csv(tmp / "confusion.csv", index=False)
        for name in roc:
            roc[name].to_csv(tmp / "roc" / f"{_slug(name)}.csv", index=False)
            pr[name].to_csv(tmp / "precision_recall" / f"{_slug(name)}.csv", index=False)
    with atomic_path(args.figures) as tmp:
        tmp.mkdir()
        for name, fig in figures.items():
            fig.savefig(tmp / name)
    write_json(args.metrics, metrics)

    import mlflow

    with resume_run(Path(args.train_dir) / RUN_FILE, params.mlflow.experiment):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if k != "rows"})
        mlflow.log_artifact(args.metrics, artifact_path="evaluate")
        mlflow.log_artifacts(args.plots, artifact_path="evaluate/plots")
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"evaluate/figures/{name}")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "rows")
    print(f"evaluate: test {shown} ({metrics['rows']} rows) -> {args.metrics}")


if __name__ == "__main__":
    raise SystemExit(main())
