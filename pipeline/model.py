"""The native model: the fitted transformer and estimator as one model over raw rows.

``train`` writes it (:func:`save_native_model`), and ``evaluate``, ``export`` and the
benchmarks read it (:func:`load_native_model`), so no stage imports another stage. The train
stage's output directory holds the estimator's artifact (its name comes from the registry
entry), ``trained.json`` (estimator, family, task, classes) and the MLflow run file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_spec.task import Task
from pipeline.contract import Contract
from pipeline.errors import PipelineError
from pipeline.estimators import Estimator, get_estimator
from pipeline.frames import to_model_frame
from pipeline.io import read_json, write_json

#: The MLflow run file of the train stage (``run_id``, ``experiment_id``, ``estimator``).
RUN_FILE = "run.json"
#: What was trained: ``{"estimator", "family", "task", "classes"}``.
TRAINED_FILE = "trained.json"


@dataclass
class NativeModel:
    """The fitted transformer and estimator as one model over raw rows.

    ``task`` defaults to the contract's task; ``classes`` is empty for regression.
    """

    preprocessor: Any
    model: Any
    family: str
    estimator_name: str
    classes: list[str]
    contract: Contract
    task: Task | None = None

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = self.contract.task
        self.classes = [str(c) for c in self.classes] if self.task.is_classification else []

    @property
    def estimator(self) -> Estimator:
        return get_estimator(self.estimator_name)

    def transform(self, raw: pd.DataFrame) -> np.ndarray:
        return self.preprocessor.transform(to_model_frame(raw, self.contract))

    def predict_output(self, raw: pd.DataFrame) -> np.ndarray:
        """Probabilities ``[N, C]`` (columns in :attr:`classes` order) for classification,
        predictions ``[N]`` for regression; float64."""
        return self.estimator.predict_output(self.model, self.transform(raw), self.task)

    def predict_proba(self, raw: pd.DataFrame) -> np.ndarray:
        if self.task.is_regression:
            raise PipelineError("a regression model has no class probabilities.")
        return self.predict_output(raw)

    def predict(self, raw: pd.DataFrame) -> np.ndarray:
        """Labels (classification) or predicted values (regression)."""
        output = self.predict_output(raw)
        if self.task.is_regression:
            return output
        return np.asarray(self.classes, dtype=object)[output.argmax(axis=1)]


def save_native_model(native: NativeModel, directory: str | Path) -> None:
    """Write the estimator's artifact and ``trained.json`` into the existing ``directory``."""
    directory = Path(directory)
    native.estimator.save(native.model, directory)
    write_json(
        directory / TRAINED_FILE,
        {
            "estimator": native.estimator_name,
            "family": native.family,
            "task": native.task.value,
            "classes": list(native.classes),
        },
    )


def load_native_model(
    train_dir: str | Path, preprocessor_path: str | Path, contract: Contract
) -> NativeModel:
    """The model the train stage wrote to ``train_dir``, joined with the fitted transformer."""
    import joblib

    train_dir = Path(train_dir)
    try:
        trained = read_json(train_dir / TRAINED_FILE)
    except FileNotFoundError:
        trained = _older_layout(train_dir, contract)
    estimator = get_estimator(trained["estimator"])
    task = Task.parse(trained["task"])
    if task != contract.task:
        raise PipelineError(
            f"'{train_dir}' holds a {task.value} model, but the contract's target "
            f"'{contract.target}' makes a {contract.task.value} task; rerun the train stage."
        )
    if not (train_dir / estimator.artifact).exists():
        raise PipelineError(
            f"'{train_dir}' has no {estimator.artifact} for {estimator.name}; rerun train."
        )
    return NativeModel(
        preprocessor=joblib.load(preprocessor_path),
        model=estimator.load(train_dir),
        family=estimator.family,
        estimator_name=estimator.name,
        classes=list(trained["classes"]),
        contract=contract,
        task=task,
    )


def _older_layout(train_dir: Path, contract: Contract) -> dict[str, Any]:
    """``trained.json`` of a train directory written before it existed (``classes.json`` and
    the estimator's name in ``run.json``): classification, the contract's task."""
    try:
        classes = read_json(train_dir / "classes.json")
        estimator = read_json(train_dir / RUN_FILE)["estimator"]
    except (FileNotFoundError, KeyError):
        raise PipelineError(f"'{train_dir}' holds no trained model; run the train stage.") from None
    return {"estimator": estimator, "task": contract.task.value, "classes": classes}
