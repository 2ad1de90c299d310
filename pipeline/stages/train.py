"""``train``: fit the estimator named by ``train.estimator`` and open the pipeline's MLflow run.

The estimator comes from the registry (:mod:`pipeline.estimators`): its entry builds, fits and
saves it; the task is the contract's (:attr:`Contract.task`: classification for a categorical
target, regression for a numeric one), nothing else switches it. Every estimator is fitted on
the output of the preprocess stage's transformer; :mod:`pipeline.model` joins the two back into
one raw-rows-in model for evaluate and export.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from model_spec.task import Task
from pipeline.config import Params, TrainParams, flatten, load_params
from pipeline.contract import load_contract
from pipeline.errors import PipelineError, cli
from pipeline.estimators import get_estimator, import_keras  # noqa: F401  (import_keras: re-export)
from pipeline.frames import category_text, to_model_frame
from pipeline.io import atomic_path, file_sha256, read_table
from pipeline.model import (
    RUN_FILE,
    NativeModel,
    load_native_model,  # noqa: F401  (re-export for older callers)
    save_native_model,
)
from pipeline.tracking import configure, git_commit, write_run_file


@dataclass
class TrainResult:
    """A fitted model plus what was seen while fitting it."""

    model: Any
    family: str
    classes: list[str]
    #: One row per epoch (Keras) or per step of a learning curve (the others).
    history: pd.DataFrame
    val_metrics: dict[str, float] = field(default_factory=dict)
    task: Task = Task.MULTICLASS
    estimator: str = ""


def training_classes(task: Task, y_train: np.ndarray, target: str = "target") -> list[str]:
    """The sorted class names of a classification target; one class is refused."""
    if task.is_regression:
        return []
    classes = sorted({str(c) for c in y_train})
    if len(classes) < 2:
        seen = f"only '{classes[0]}'" if classes else "no labels at all"
        raise PipelineError(
            f"the training split of target '{target}' holds {seen}: a classifier needs at "
            "least two classes to learn anything. Check the data (is the target column the "
            "right one, was the table filtered?) or, if the target is a measured quantity, "
            "declare it `type: numeric` in the contract to train a regression model."
        )
    return classes


def train_model(
    estimator: str,
    params: TrainParams,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    task: Task | None = None,
    target: str = "target",
) -> TrainResult:
    """Fit ``estimator`` on transformed features for ``task``.

    ``task`` None means classification, binary or multiclass by the number of training
    labels. Classes are the sorted training labels; regression targets must be numbers.
    """
    entry = get_estimator(estimator)
    if task is None:
        n = len({str(c) for c in y_train})
        task = Task.BINARY if n == 2 else Task.MULTICLASS
    block = params.blocks.get(entry.name)
    if block is None:
        raise PipelineError(f"params: 'params.train' has no '{entry.name}' block.")
    entry.check(block, task)
    classes = training_classes(task, y_train, target)
    if task.is_regression:
        y_train = _numbers(y_train, target, "training")
        y_val = _numbers(y_val, target, "validation")
    fitted = entry.fit(block, task, params.seed, x_train, y_train, x_val, y_val, classes)
    return TrainResult(
        model=fitted.model,
        family=entry.family,
        classes=classes,
        history=fitted.history,
        val_metrics=fitted.val_metrics,
        task=task,
        estimator=entry.name,
    )


def _numbers(values: np.ndarray, target: str, split: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise PipelineError(
            f"target '{target}' is numeric in the contract, but its {split} split holds "
            "values that are not numbers."
        ) from None
    if np.isnan(array).any():
        raise PipelineError(
            f"target '{target}' has {int(np.isnan(array).sum())} missing value(s) in the "
            f"{split} split; rows without a target cannot be trained on."
        )
    return array


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

    if native.estimator.mlflow_flavor == "tensorflow":
        import mlflow.tensorflow

        features = native.transform(example).astype("float32")
        mlflow.tensorflow.log_model(
            result.model,
            name="model",
            signature=infer_signature(features, native.predict_output(example)),
            input_example=features,
            pip_requirements=_pip_requirements(native.estimator.requirements),
        )
    else:
        import mlflow.sklearn
        from sklearn.pipeline import Pipeline

        model_frame = to_model_frame(example, native.contract)
        pipeline = Pipeline([("preprocess", native.preprocessor), ("model", result.model)])
        mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(model_frame, native.predict_output(example)),
            input_example=model_frame,
            serialization_format="skops",
            skops_trusted_types=_skops_trusted_types(pipeline),
            pip_requirements=[*_pip_requirements(native.estimator.requirements), "skops"],
        )


def _pip_requirements(distributions: tuple[str, ...]) -> list[str]:
    """Pinned requirements of the logged model: the installed versions of its libraries."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in distributions]


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
    task = contract.task
    splits = Path(args.splits)
    train, val = read_table(splits / "train.parquet"), read_table(splits / "val.parquet")
    preprocessor = joblib.load(args.preprocessor)
    target = contract.target
    x_train = preprocessor.transform(to_model_frame(train, contract))
    x_val = preprocessor.transform(to_model_frame(val, contract))
    y_train = _target(train, target, task, "training")
    y_val = _target(val, target, task, "validation")

    estimator = get_estimator(params.train.estimator)
    estimator.check(params.train.selected, task)
    training_classes(task, y_train, target)  # refuse a one-class target before MLflow starts
    experiment_id = configure(params.mlflow.experiment)
    import mlflow

    tags = {
        "git_commit": git_commit(),
        "data_sha256": file_sha256(args.raw),
        "estimator": estimator.name,
        "family": estimator.family,
        "task": task.value,
    }
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        result = train_model(
            estimator.name, params.train, x_train, y_train, x_val, y_val, task, target
        )
        native = NativeModel(
            preprocessor,
            result.model,
            result.family,
            estimator.name,
            result.classes,
            contract,
            task,
        )
        _log_to_mlflow(result, native, params, val.head(5))
        with atomic_path(args.out) as tmp:
            tmp.mkdir()
            save_native_model(native, tmp)
            write_run_file(tmp / RUN_FILE, run.info.run_id, experiment_id, estimator=estimator.name)
        _write_csv(args.history, result.history)
    shown = ", ".join(
        f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in result.val_metrics.items()
    )  # an epoch or iteration count reads as a count
    print(
        f"train: {estimator.name} ({result.family}, {task.value}); validation {shown}; "
        f"MLflow run {run.info.run_id}"
    )


def _target(frame: pd.DataFrame, target: str, task: Task, split: str) -> np.ndarray:
    if task.is_regression:
        return _numbers(pd.to_numeric(frame[target], errors="coerce"), target, split)
    return category_text(frame[target]).to_numpy(dtype=object)


def _write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


if __name__ == "__main__":
    raise SystemExit(main())
