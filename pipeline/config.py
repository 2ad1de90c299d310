"""Load ``params.yaml`` into frozen dataclasses.

This is the only place that reads the params file. Every default lives in ``params.yaml``;
the dataclasses below declare shapes, not values, so a missing key is an error, not a silent
fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from pipeline.errors import PipelineError

DEFAULT_PARAMS = Path("params.yaml")


@dataclass(frozen=True)
class DataParams:
    source: str
    contract: str


@dataclass(frozen=True)
class PreprocessParams:
    seed: int
    test_size: float
    val_size: float


@dataclass(frozen=True)
class LogisticRegressionParams:
    C: float
    max_iter: int


@dataclass(frozen=True)
class RandomForestParams:
    n_estimators: int
    max_depth: int | None
    min_samples_leaf: int


@dataclass(frozen=True)
class KerasMLPParams:
    hidden_units: tuple[int, ...]
    dropout: float
    learning_rate: float
    epochs: int
    batch_size: int
    patience: int


@dataclass(frozen=True)
class TrainParams:
    estimator: str
    seed: int
    logistic_regression: LogisticRegressionParams
    random_forest: RandomForestParams
    keras_mlp: KerasMLPParams


@dataclass(frozen=True)
class ExportParams:
    opset: int
    parity_tolerance: float
    golden_rows: int


@dataclass(frozen=True)
class GateParams:
    min: dict[str, float]
    max_regression: dict[str, float]


@dataclass(frozen=True)
class RegistryParams:
    model_name: str


@dataclass(frozen=True)
class MlflowParams:
    experiment: str


@dataclass(frozen=True)
class MonitorDriftParams:
    p_value: float
    large_sample: int
    numeric_distance: float
    categorical_distance: float
    drift_share: float


@dataclass(frozen=True)
class MonitorParams:
    log_dir: str
    prediction_log: str
    feedback_log: str
    reference: str
    test_metrics: str
    out: str
    window_hours: float
    min_rows: int
    drift: MonitorDriftParams
    live_metric: dict[str, str]
    max_metric_degradation: float


@dataclass(frozen=True)
class Params:
    data: DataParams
    preprocess: PreprocessParams
    train: TrainParams
    export: ExportParams
    gate: GateParams
    registry: RegistryParams
    mlflow: MlflowParams
    monitor: MonitorParams


SKLEARN_ESTIMATORS = ("logistic_regression", "random_forest")
KERAS_ESTIMATORS = ("keras_mlp",)


def family_of(estimator: str) -> str:
    """Return ``"sklearn"`` or ``"keras"`` for an estimator name."""
    if estimator in SKLEARN_ESTIMATORS:
        return "sklearn"
    if estimator in KERAS_ESTIMATORS:
        return "keras"
    known = ", ".join(SKLEARN_ESTIMATORS + KERAS_ESTIMATORS)
    raise PipelineError(f"train.estimator is '{estimator}'; expected one of: {known}.")


def _build(cls: type, raw: Any, where: str) -> Any:
    """Recursively turn a mapping into dataclass ``cls``, naming the key path on error."""
    if not isinstance(raw, dict):
        raise PipelineError(f"params: '{where}' must be a mapping, got {type(raw).__name__}.")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    missing = sorted(names - raw.keys())
    unknown = sorted(raw.keys() - names)
    if missing:
        raise PipelineError(f"params: '{where}' is missing key(s): {', '.join(missing)}.")
    if unknown:
        raise PipelineError(f"params: '{where}' has unknown key(s): {', '.join(unknown)}.")
    values = {}
    for name in names:
        hint, value = hints[name], raw[name]
        if is_dataclass(hint):
            values[name] = _build(hint, value, f"{where}.{name}")
        elif getattr(hint, "__origin__", None) is tuple:
            values[name] = tuple(value)
        else:
            values[name] = value
    return cls(**values)


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read ``params.yaml`` (or ``path``) into :class:`Params`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"params file '{path}' does not exist.") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"params file '{path}' is not valid YAML: {exc}") from None
    params = _build(Params, raw, "params")
    family_of(params.train.estimator)  # fail early on an unknown estimator
    return params


def flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a (nested) dataclass or mapping into ``{"a.b.c": value}`` for MLflow."""
    items = params.__dict__ if is_dataclass(params) else params
    out: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if is_dataclass(value) or isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
