"""A failed export never leaves the user without a servable model, and never leaves a gate
report that says "passed" for a model the pipeline no longer produces (issue 9, items 3 and 10).

Real ``dvc repro`` in a temporary copy of the project, with the logistic regression (fast). The
export is broken the honest way: a parity tolerance no float32 graph can meet, so ONNX Runtime
really disagrees with the native model and the stage really exits 1.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from model_spec.descriptor import ModelDescriptor
from model_spec.feed import build_feed
from pipeline.io import file_sha256
from tests.integration.conftest import Project

pytestmark = pytest.mark.integration


def _settings(project: Project) -> tuple[dict[str, str], str]:
    """What `make serve` would serve: pipeline.registry serve-source's output, parsed."""
    proc = project.python(
        "-m", "pipeline.registry", "serve-source", "--params", "params.yaml",
        "--model-dir", "models/export",
    )  # fmt: skip
    pairs = dict(item.split("=", 1) for item in shlex.split(proc.stdout))
    return pairs, proc.stderr.strip()


def _replays_its_golden_rows(export_dir) -> None:
    descriptor = ModelDescriptor.read(export_dir)
    golden = json.loads((export_dir / "golden.json").read_text())
    rows = pd.DataFrame([r["inputs"] for r in golden["rows"]])
    session = ort.InferenceSession(str(export_dir / descriptor.onnx.file))
    labels, proba = session.run(["label", "probabilities"], build_feed(descriptor, rows))
    assert list(labels) == [r["label"] for r in golden["rows"]]
    expected = np.array([r["probabilities"] for r in golden["rows"]])
    assert np.abs(proba - expected).max() <= golden["tolerance"]


def test_a_failed_export_keeps_the_last_good_one_and_voids_the_gate_report(
    project: Project, monkeypatch
):
    project.set_params(**{"train.estimator": "logistic_regression"})
    project.dvc("repro")
    good = ModelDescriptor.read(project.root / "models/export")
    good_onnx = file_sha256(project.root / "models/export/model.onnx")
    gate = project.read_json("reports/gate.json")
    assert gate["passed"] is True and gate["candidate"]["run_id"] == good.lineage.run_id
    for command in ("register", "promote"):
        args = ["--params", "params.yaml"]
        if command == "register":
            args += ["--model-dir", "models/export", "--gate", "reports/gate.json"]
            args += ["--dvc-lock", "dvc.lock"]
        project.python("-m", "pipeline.registry", command, *args)

    # A new model whose export cannot pass parity: DVC runs train, evaluate, then export fails.
    project.set_params(**{"train.logistic_regression.C": 0.5, "export.parity_tolerance": 1.0e-12})
    failed = project.dvc("repro", check=False)
    assert failed.returncode != 0
    assert "export failed: parity failed on the test split" in failed.stderr
    new_run = json.loads((project.root / "models/train/run.json").read_text())["run_id"]
    assert new_run != good.lineage.run_id

    # Item 3: models/export is the previous export, complete and unchanged, and it serves.
    kept = ModelDescriptor.read(project.root / "models/export")
    assert kept.lineage.run_id == good.lineage.run_id
    assert file_sha256(project.root / "models/export/model.onnx") == good_onnx
    _replays_its_golden_rows(project.root / "models/export")
    settings, said = _settings(project)
    assert settings == {"SERVING_MODEL_DIR": "models/export"}
    assert said == (
        f"serve: the export in 'models/export' (penguins-classifier, logistic_regression, "
        f"run {good.lineage.run_id})."
    )

    # Item 10: the gate report no longer says "passed"; it says why, and register refuses.
    gate = project.read_json("reports/gate.json")
    assert gate["passed"] is False and gate["invalidated"] is True
    assert gate["failed"] == ["export"] and gate["candidate"] == {"run_id": new_run}
    assert gate["note"].startswith(
        f"Not judged: the export of run {new_run} failed, so there is no new model to gate: "
        "parity failed on the test split"
    )
    assert gate["note"].endswith(
        "'models/export' still holds the previous export, which `make serve` serves."
    )
    assert (project.root / "reports/gate.md").read_text().startswith("# Model gate: NOT RUN")
    parity = project.read_json("reports/parity.json")
    assert parity["passed"] is False and parity["run_id"] == new_run
    refused = project.python(
        "-m", "pipeline.registry", "register", "--params", "params.yaml",
        "--model-dir", "models/export", "--gate", "reports/gate.json", "--dvc-lock", "dvc.lock",
        check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "the gate failed for this model (failed checks: export)" in refused.stderr

    # No export at all (a fresh clone whose first export failed): the registry's champion.
    shutil.rmtree(project.root / "models/export")
    settings, said = _settings(project)
    assert settings["SERVING_MODEL_URI"] == "models:/penguins-classifier@champion"
    assert settings["SERVING_MODEL_DIR"] == ""
    assert settings["MLFLOW_TRACKING_URI"] == f"sqlite:///{project.root / 'mlruns/mlflow.db'}"
    assert said == (
        "serve: no usable export in 'models/export' ('models/export' does not exist); serving "
        "the registry's champion models:/penguins-classifier@champion (version 1) instead."
    )
    # SERVING_MODEL_URI given, MLFLOW_TRACKING_URI not: the project's store. The server was
    # left to MLflow's default, ./mlflow.db, which has no such model (and was created).
    monkeypatch.setenv("SERVING_MODEL_URI", "models:/penguins-classifier@champion")
    settings, said = _settings(project)
    assert settings == {
        "SERVING_MODEL_URI": "models:/penguins-classifier@champion",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project.root / 'mlruns/mlflow.db'}",
    }
    assert not (project.root / "mlflow.db").exists()


def _rerun_against_another_store(project: Project, stage: str, tmp_path: Path):
    """A passing pipeline, then ``stage`` forced again against a store without its train run
    (what DVC's run cache restoring a train made elsewhere leads to)."""
    project.set_params(**{"train.estimator": "logistic_regression"})
    project.dvc("repro")
    assert project.read_json("reports/gate.json")["passed"] is True
    return subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "repro", "--force", "--single-item", stage],
        cwd=project.root,
        env={**project.env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'other.db'}"},
        capture_output=True,
        text=True,
    )


def test_an_export_whose_run_is_not_in_the_store_leaves_the_failure_record(
    project: Project, tmp_path
):
    """The train stage's run is missing from the store export logs to (DVC's run cache
    restored a train made against another store): the gate report still said PASSED, for the
    previous export, and parity.json was gone, since that failure came before the record."""
    failed = _rerun_against_another_store(project, "export", tmp_path)
    assert failed.returncode != 0
    assert "is not in the store" in failed.stderr and "make retrain" in failed.stderr
    gate = project.read_json("reports/gate.json")
    assert gate["passed"] is False and gate["invalidated"] is True
    assert "is not in the store" in gate["note"]
    parity = project.read_json("reports/parity.json")
    assert parity["passed"] is False and "is not in the store" in parity["error"]


def test_a_gate_whose_verdict_cannot_be_recorded_leaves_no_passed_report(
    project: Project, tmp_path
):
    """The gate wrote PASSED, then failed to log it to the train run (here a run missing from
    the store); `make register` read the PASSED file. The report is voided instead."""
    failed = _rerun_against_another_store(project, "gate", tmp_path)
    assert failed.returncode != 0
    assert "is not in the store" in failed.stderr and "Traceback" not in failed.stderr
    gate = project.read_json("reports/gate.json")
    assert gate["passed"] is False and gate["invalidated"] is True
    assert "could not be recorded in MLflow run" in gate["note"]


def test_an_export_that_failed_its_gate_is_not_what_make_serve_serves(project: Project):
    """The export stage swaps in the new model before the gate judges it: after a failed gate
    `make serve` served the rejected model as if nothing had happened. It serves the champion
    and says why; with no champion, it serves the export and says it failed."""
    project.set_params(**{"train.estimator": "logistic_regression"})
    project.dvc("repro")
    for command in ("register", "promote"):
        args = ["--params", "params.yaml"]
        if command == "register":
            args += ["--model-dir", "models/export", "--gate", "reports/gate.json"]
            args += ["--dvc-lock", "dvc.lock"]
        project.python("-m", "pipeline.registry", command, *args)
    project.set_params(**{"train.logistic_regression.C": 0.5, "gate.min.multiclass.f1_macro": 1.5})
    assert project.dvc("repro", check=False).returncode != 0
    rejected = ModelDescriptor.read(project.root / "models/export").lineage.run_id
    assert project.read_json("reports/gate.json")["candidate"]["run_id"] == rejected
    settings, said = _settings(project)
    assert settings["SERVING_MODEL_URI"] == "models:/penguins-classifier@champion"
    assert said.startswith(
        "serve: no usable export in 'models/export' (it FAILED its gate (reports/gate.json: "
        "floor.f1_macro"
    )
    assert said.endswith("serving the registry's champion models:/penguins-classifier@champion "
                         "(version 1) instead.")  # fmt: skip
    shutil.rmtree(project.root / "mlruns")  # no registry: the export, said loudly
    settings, said = _settings(project)
    assert settings == {"SERVING_MODEL_DIR": "models/export"}
    assert "which FAILED its gate" in said and "Do not ship it." in said
