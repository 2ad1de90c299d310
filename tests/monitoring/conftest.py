"""Monitoring fixtures: the default data's splits and prediction logs in the shared format.

``write_prediction_log`` writes exactly what the server writes (BRIEF / README, "Prediction
log"): one JSON line per predicted row, so the monitor is tested on that format before and
independently of the server producing it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.contract import Contract, load_contract
from pipeline.stages.preprocess import Splits
from tests.conftest import REPO_ROOT
from tests.integration.conftest import write_params

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="session")
def contract() -> Contract:
    return load_contract(REPO_ROOT / "data" / "contract.yaml")


@pytest.fixture(scope="session")
def splits(contract) -> Splits:
    """The pipeline's own split of the default data (same seed and sizes as params.yaml)."""
    from palmerpenguins import load_penguins

    from pipeline.config import load_params
    from pipeline.stages.preprocess import split_data

    p = load_params(REPO_ROOT / "params.yaml").preprocess
    return split_data(load_penguins(), contract.target, p.seed, p.test_size, p.val_size)


def _jsonable(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def log_records(
    frame: pd.DataFrame,
    features: Sequence[str],
    outputs: Sequence[Any],
    *,
    start: datetime = T0,
    prefix: str = "req",
    rows_per_request: int = 1,
    variant: str = "champion",
    served: bool = True,
    version: str = "1",
    regression: bool = False,
) -> list[dict[str, Any]]:
    """Prediction-log records for ``frame``'s rows, one second apart."""
    records = []
    values = frame[list(features)].to_dict("records")
    for i, (inputs, output) in enumerate(zip(values, outputs, strict=True)):
        out = {"value": float(output)} if regression else {"label": str(output)}
        records.append(
            {
                "ts": iso(start + timedelta(seconds=i)),
                "request_id": f"{prefix}-{i // rows_per_request}",
                "row": i % rows_per_request,
                "model": {"name": "penguins-classifier", "version": version},
                "variant": variant,
                "served": served,
                "inputs": {k: _jsonable(v) for k, v in inputs.items()},
                "output": out,
                "latency_ms": 1.0,
            }
        )
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def monitor_params(tmp_path):
    """``monitor_params(**{"monitor.min_rows": 10})``: a params file for ``pipeline.stages.monitor``
    with paths made absolute, so the CLI runs from any directory."""

    def write(**dotted: Any) -> Path:
        dotted.setdefault("data.contract", str(REPO_ROOT / "data" / "contract.yaml"))
        return write_params(REPO_ROOT / "params.yaml", tmp_path / "params.yaml", **dotted)

    return write


MONITORING = REPO_ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "rules.yml"
RULE_TESTS = [MONITORING / "prometheus" / n for n in ("tests.yml", "tests-slow-clock.yml")]


def system_tool(name: str) -> str:
    """The path of a tool from system-packages.txt; a missing one fails the test, naming the
    package (`make system-deps` installs them)."""
    import shutil

    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: apt-get install prometheus prometheus-pushgateway")
    return found
