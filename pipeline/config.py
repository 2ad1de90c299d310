"""Load ``params.yaml`` into frozen dataclasses.

This is the only place that reads the params file. Every default lives in ``params.yaml``;
the dataclasses below declare shapes, not values, so a missing key is an error, not a silent
fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from pipeline.errors import PipelineError

DEFAULT_PARAMS = Path("params.yaml")


#: What ``data.thousands`` may be, beside null.
THOUSANDS_SEPARATORS = (",", ".", " ", "'", "_")


@dataclass(frozen=True)
class DataParams:
    source: str
    contract: str
    missing_values: tuple[str, ...]
    decimal: str
    thousands: str | None
    encoding: str

    def __post_init__(self):
        if not all(isinstance(v, str) for v in self.missing_values):
            raise PipelineError(
                "params: 'params.data.missing_values' must be a list of text values "
                "(quote numbers: '-1'), got "
                f"{[v for v in self.missing_values if not isinstance(v, str)]!r}."
            )
        if self.decimal not in (".", ","):
            raise PipelineError(
                f"params: 'params.data.decimal' must be '.' or ',', not {self.decimal!r}."
            )
        if self.thousands is not None and self.thousands not in THOUSANDS_SEPARATORS:
            raise PipelineError(
                "params: 'params.data.thousands' must be null or one of "
                f"{', '.join(repr(t) for t in THOUSANDS_SEPARATORS)}, not {self.thousands!r}."
            )
        if self.thousands == self.decimal:
            raise PipelineError(
                f"params: 'params.data.thousands' and 'params.data.decimal' are both "
                f"{self.decimal!r}; a number cannot use one mark for both."
            )
        import codecs

        try:
            codecs.lookup(str(self.encoding))
        except LookupError:
            raise PipelineError(
                f"params: 'params.data.encoding' {self.encoding!r} is not an encoding Python "
                "knows (utf-8, latin-1, cp1252, utf-16, ...)."
            ) from None

    def read_options(self) -> dict:
        """How :func:`pipeline.sources.ingest` reads the source."""
        return {
            "missing_values": self.missing_values,
            "decimal": self.decimal,
            "thousands": self.thousands,
            "encoding": self.encoding,
        }


@dataclass(frozen=True)
class PreprocessParams:
    seed: int
    test_size: float
    val_size: float


@dataclass(frozen=True, init=False)
class TrainParams:
    """``train:``: the estimator's name, the seed, and one block per estimator.

    Each block is parsed into the params dataclass its entry in :mod:`pipeline.estimators`
    declares; ``params.train.<name>`` (e.g. ``params.train.keras_mlp``) reads one, and both
    ``with_block(name, **changes)`` and ``dataclasses.replace(train, <name>=block)`` return a
    copy with one block changed.
    """

    estimator: str
    seed: int
    blocks: Mapping[str, Any]

    def __init__(
        self, estimator: str, seed: int, blocks: Mapping[str, Any] | None = None, **named: Any
    ) -> None:
        object.__setattr__(self, "estimator", estimator)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "blocks", {**(blocks or {}), **named})

    def __getattr__(self, name: str) -> Any:
        blocks = self.__dict__.get("blocks") or {}
        if name in blocks:
            return blocks[name]
        raise AttributeError(f"params.train has no block '{name}'")

    @property
    def selected(self) -> Any:
        """The params block of :attr:`estimator`."""
        return self.blocks[self.estimator]

    def with_block(self, name: str, **changes: Any) -> TrainParams:
        blocks = dict(self.blocks)
        blocks[name] = replace(blocks[name], **changes)
        return replace(self, blocks=blocks)

    def as_mapping(self) -> dict[str, Any]:
        """What MLflow logs and lineage records: the selected estimator's block only."""
        return {"estimator": self.estimator, "seed": self.seed, self.estimator: self.selected}


def _build_train(raw: Any, where: str) -> TrainParams:
    from pipeline.estimators import ESTIMATORS, get_estimator

    if not isinstance(raw, dict):
        raise PipelineError(f"params: '{where}' must be a mapping, got {type(raw).__name__}.")
    missing = sorted({"estimator", "seed"} - raw.keys())
    if missing:
        raise PipelineError(f"params: '{where}' is missing key(s): {', '.join(missing)}.")
    estimator = get_estimator(raw["estimator"])
    unknown = sorted(k for k in raw if k not in ("estimator", "seed") and k not in ESTIMATORS)
    if unknown:
        raise PipelineError(
            f"params: '{where}' has unknown key(s): {', '.join(unknown)} "
            f"(blocks are named after estimators: {', '.join(ESTIMATORS)})."
        )
    if estimator.name not in raw:
        raise PipelineError(
            f"params: '{where}' has no '{estimator.name}' block for train.estimator "
            f"'{estimator.name}'."
        )
    blocks = {
        name: ESTIMATORS[name].parse_params(value, f"{where}.{name}")
        for name, value in raw.items()
        if name in ESTIMATORS
    }
    return TrainParams(estimator=estimator.name, seed=int(raw["seed"]), blocks=blocks)


@dataclass(frozen=True)
class ExportParams:
    opset: int
    parity_tolerance: float
    golden_rows: int


@dataclass(frozen=True)
class GateParams:
    """Each block maps a task (binary, multiclass, regression) to ``{metric: number}``."""

    min: dict[str, dict[str, float]]
    max_regression: dict[str, dict[str, float]]
    baseline_margin: dict[str, dict[str, float]]


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


def family_of(estimator: str) -> str:
    """The family (library) of an estimator name: ``sklearn``, ``lightgbm``, ``xgboost``,
    ``keras``; an unknown name is a :class:`PipelineError` listing the known ones."""
    from pipeline.estimators import get_estimator

    return get_estimator(estimator).family


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
        if hint is TrainParams:
            values[name] = _build_train(value, f"{where}.{name}")
        elif is_dataclass(hint):
            values[name] = _build(hint, value, f"{where}.{name}")
        elif getattr(hint, "__origin__", None) is tuple:
            if not isinstance(value, list | tuple):
                raise PipelineError(f"params: '{where}.{name}' must be a list, got {value!r}.")
            values[name] = tuple(value)
        else:
            values[name] = value
    return cls(**values)


#: Public name of the builder, for the params dataclasses of :mod:`pipeline.estimators`.
build_dataclass = _build


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read ``params.yaml`` (or ``path``) into :class:`Params`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"params file '{path}' does not exist.") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"params file '{path}' is not valid YAML: {exc}") from None
    return _build(Params, raw, "params")


def flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a (nested) dataclass or mapping into ``{"a.b.c": value}`` for MLflow."""
    if hasattr(params, "as_mapping"):
        items = params.as_mapping()
    else:
        items = params.__dict__ if is_dataclass(params) else params
    out: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if is_dataclass(value) or isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
