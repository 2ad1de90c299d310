"""``MLproject``: the same stage commands as ``dvc.yaml``, and ``mlflow run`` really runs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.integration.conftest import Project

MLFLOW = str(Path(sys.executable).parent / "mlflow")


def _entry_points() -> dict:
    return yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]


def test_each_stage_entry_point_is_the_dvc_stage_command_and_takes_no_parameters():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    entry_points = _entry_points()
    assert set(entry_points) == set(stages) | {"main"}
    for name, stage in stages.items():
        assert entry_points[name]["command"] == stage["cmd"], name
    assert entry_points["main"]["command"] == "dvc repro"
    assert not any("parameters" in entry for entry in entry_points.values())


def _mlflow_run(project: Project, entry_point: str, uri: str) -> None:
    """``mlflow run . -e <entry_point> --env-manager local`` against the store at ``uri``."""
    project.run(
        "env",
        f"MLFLOW_TRACKING_URI={uri}",
        MLFLOW, "run", ".", "-e", entry_point, "--env-manager", "local",
        "--experiment-name", "tabular-mlops",
    )  # fmt: skip


def _projects_runs(client, entry_point: str) -> list:
    """The runs MLflow Projects opened for an entry point (it tags each one)."""
    experiment = client.get_experiment_by_name("tabular-mlops")
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.project.entryPoint` = '{entry_point}'",
    )


@pytest.mark.integration
def test_mlflow_run_runs_stages_and_train_adopts_the_projects_run(project: Project):
    uri = f"sqlite:///{project.root}/mlruns/mlflow.db"
    (project.root / "mlruns").mkdir()
    project.set_params(**{"train.estimator": "logistic_regression"})  # the fastest to train
    _mlflow_run(project, "ingest", uri)
    assert (project.root / "data/raw/dataset.parquet").is_file()
    project.python(
        "-m", "pipeline.stages.validate", "--params", "params.yaml",
        "--data", "data/raw/dataset.parquet", "--out", "reports/validation",
    )  # fmt: skip
    project.python(
        "-m", "pipeline.stages.preprocess", "--params", "params.yaml",
        "--data", "data/raw/dataset.parquet", "--validation", "reports/validation/result.json",
        "--out-dir", "data/processed", "--preprocessor", "models/preprocess/preprocessor.joblib",
    )  # fmt: skip

    _mlflow_run(project, "train", uri)

    client = mlflow.MlflowClient(tracking_uri=uri)
    assert len(_projects_runs(client, "ingest")) == 1
    (run,) = _projects_runs(client, "train")
    recorded = json.loads((project.root / "models/train/run.json").read_text())
    assert recorded["run_id"] == run.info.run_id  # one pipeline execution is still one run
    assert recorded["experiment_id"] == run.info.experiment_id
    assert run.info.status == "FINISHED"
    assert run.data.params["train.estimator"] == "logistic_regression"
    assert "val_log_loss" in run.data.metrics
