"""The exported ``model.onnx`` is byte-identical across identical runs, for every estimator, so
its hash (lineage, the registry's ``onnx_sha256`` tag) identifies the model (issue 9, item 11).

Two fresh processes with different hash seeds each train every shipped estimator on the same
data and export it through ``pipeline.stages.export`` (ONNX conversion + :func:`canonical_onnx`). On
today's main the Keras graph carries a random id in its doc string and the scikit-learn graphs
list their opset imports in set order, which moves with ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.estimators import ESTIMATORS
from tests.conftest import REPO_ROOT

# About 2 minutes: two processes each train and export every shipped estimator.
pytestmark = pytest.mark.integration

#: Train (small budgets) and export every estimator; print {estimator: sha256 of model.onnx}.
SCRIPT = r"""
import hashlib, json, sys
from pipeline.config import load_params
from pipeline.estimators import ESTIMATORS
from pipeline.stages.export import canonical_onnx
from pipeline.model import NativeModel
from pipeline import onnx_export
from pipeline.stages.preprocess import fit_preprocessor, to_model_frame
from pipeline.stages.train import train_model
from tests.bundled import contract_for, diabetes
from palmerpenguins import load_penguins
from pipeline.contract import load_contract
from model_spec.task import Task

params = load_params("params.yaml")
train = (
    params.train.with_block("random_forest", n_estimators=10)
    .with_block("lightgbm", n_estimators=10)
    .with_block("xgboost", n_estimators=10)
    .with_block("hist_gradient_boosting", max_iter=10)
    .with_block("keras_mlp", epochs=3, patience=2)
)
tables = {
    Task.MULTICLASS: (load_penguins(), load_contract("data/contract.yaml")),
    Task.REGRESSION: (diabetes(), contract_for(diabetes(), "progression")),
}
hashes = {}
for name, entry in ESTIMATORS.items():
    task = Task.MULTICLASS if Task.MULTICLASS in entry.tasks else Task.REGRESSION
    table, contract = tables[task]
    shuffled = table[table[contract.target].notna()].sample(frac=1.0, random_state=42)
    n = len(shuffled)
    train_rows, val_rows = shuffled.iloc[: n * 6 // 10], shuffled.iloc[n * 6 // 10 : n * 8 // 10]
    pre = fit_preprocessor(train_rows, contract)

    def xy(frame):
        y = frame[contract.target].to_numpy()
        return pre.transform(to_model_frame(frame, contract)), (
            y.astype(float) if task.is_regression else y.astype(str)
        )

    result = train_model(name, train, *xy(train_rows), *xy(val_rows), task=task)
    native = NativeModel(pre, result.model, result.family, name, result.classes, contract, task)
    model = canonical_onnx(onnx_export.to_onnx(native, params.export.opset))
    hashes[name] = hashlib.sha256(model.SerializeToString()).hexdigest()
print(json.dumps(hashes))
"""


def _hashes(seed: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONHASHSEED": seed,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_ENABLE_ONEDNN_OPTS": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_runs() -> tuple[dict[str, str], dict[str, str]]:
    return _hashes("1"), _hashes("2")


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_two_identical_runs_export_the_same_bytes(two_runs, estimator):
    first, second = two_runs
    assert first[estimator] == second[estimator]
