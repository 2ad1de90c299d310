"""The real ``dvc repro`` in a temporary copy of the project, for both estimator families.

The tests in this module share one project copy and run in file order: a full run, then
no-op, determinism, a params change and finally a switch to the other family.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.integration.conftest import Project, make_project

pytestmark = pytest.mark.integration

STAGES = ["ingest", "validate", "preprocess", "train", "evaluate", "export", "gate"]


def _ran(proc) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", proc.stdout)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Project, object]:
    project = make_project(tmp_path_factory.mktemp("pipeline") / "project")
    proc = project.dvc("repro")
    return project, proc


def test_full_repro_runs_every_stage_and_writes_every_output(built):
    project, proc = built
    assert _ran(proc) == STAGES
    # One line per stage: no Keras progress bar, and the best epoch reads as a count.
    (train_line,) = [line for line in proc.stdout.splitlines() if line.startswith("train: ")]
    assert re.search(r"best_epoch \d+[,;]", train_line), train_line
    assert "\u2501" not in proc.stdout + (proc.stderr or "")
    root = project.root
    for rel in (
        "data/raw/dataset.parquet",
        "reports/validation/result.json",
        "reports/validation/data_docs/index.html",
        "data/processed/train.parquet",
        "data/processed/val.parquet",
        "data/processed/test.parquet",
        "models/preprocess/preprocessor.joblib",
        "models/train/network.keras",
        "models/export/saved_model/saved_model.pb",
        "models/train/run.json",
        "reports/train_history.csv",
        "reports/plots/confusion/confusion.csv",
        "reports/figures/confusion_matrix.png",
        "reports/figures/roc.png",
        "reports/figures/precision_recall.png",
        "models/export/model.onnx",
        "models/export/model.json",
        "models/export/golden.json",
        "models/export/model_card.md",
        "reports/parity.json",
        "reports/gate.json",
        "reports/gate.md",
    ):
        assert (root / rel).exists(), rel
    metrics = project.read_json("reports/metrics.json")
    assert {"accuracy", "f1_macro", "roc_auc_ovr", "log_loss"} <= set(metrics)
    assert metrics["accuracy"] > 0.9 and metrics["rows"] == 69
    assert project.read_json("reports/parity.json")["passed"] is True
    assert project.read_json("reports/gate.json")["passed"] is True
    assert not (root / "gx").exists()


def test_mlflow_run_holds_params_metrics_plots_and_model(built):
    import mlflow

    project, _ = built
    run_id = project.read_json("models/train/run.json")["run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project.root}/mlruns/mlflow.db")
    run = client.get_run(run_id)
    assert run.data.params["train.estimator"] == "keras_mlp"
    assert run.data.params["preprocess.seed"] == "42"
    metrics = project.read_json("reports/metrics.json")
    assert run.data.metrics["test_f1_macro"] == pytest.approx(metrics["f1_macro"])
    assert len(run.data.tags["data_sha256"]) == 64
    assert run.data.tags["git_commit"] != "unknown"
    history = client.get_metric_history(run_id, "val_log_loss")
    assert len(history) >= 2  # per-step metrics, not just a final value
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluate/figures")}
    assert "evaluate/figures/confusion_matrix.png" in artifacts
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
    )
    by_name = {m.name: m for m in models}
    assert {"model", "onnx_model"} <= set(by_name)  # the trained network and the export
    for logged in by_name.values():
        assert (project.root / "mlruns" / "artifacts").as_uri() in logged.artifact_location
        local = Path(urlparse(logged.artifact_location).path)
        model = mlflow.models.Model.load(str(local / "MLmodel"))
        assert model.signature is not None


def test_repro_right_after_a_run_does_nothing(built):
    project, _ = built
    proc = project.dvc("repro")
    # ingest always reads data.source (see dvc.yaml); finding it unchanged, nothing else runs.
    assert _ran(proc) == ["ingest"]
    assert "is unchanged" in proc.stdout
    assert "Stage 'gate' didn't change, skipping" in proc.stdout


def test_metrics_and_plots_show(built):
    project, _ = built
    shown = project.dvc("metrics", "show", "--json").stdout
    assert "f1_macro" in shown and "reports/parity.json" in shown
    project.dvc("plots", "show", "-o", "plots-html")
    html = (project.root / "plots-html" / "index.html").read_text()
    assert "confusion" in html.lower() and "roc" in html.lower()


def test_same_params_and_data_give_the_same_metrics(built):
    project, _ = built
    before = project.read_json("reports/metrics.json")
    project.dvc("repro", "--force", "--single-item", "train")
    proc = project.dvc("repro")
    assert "evaluate" in _ran(proc)
    assert project.read_json("reports/metrics.json") == before


def test_changing_a_train_param_reruns_only_train_and_downstream(built):
    project, _ = built
    project.set_params(**{"train.keras_mlp.learning_rate": 0.02})
    proc = project.dvc("repro")
    ran = _ran(proc)
    # ingest always runs (it reads data.source) and, finding it unchanged, stops nothing.
    assert ran[:3] == ["ingest", "train", "evaluate"]
    assert "is unchanged" in proc.stdout
    assert not {"validate", "preprocess"} & set(ran)


def test_switching_to_the_scikit_learn_family_with_exp_run(built):
    project, _ = built
    project.commit("params before the experiment")
    proc = project.dvc("exp", "run", "-S", "train.estimator=logistic_regression")
    assert "train" in _ran(proc)
    assert not {"validate", "preprocess"} & set(_ran(proc))
    root = project.root
    assert (root / "models/train/estimator.joblib").exists()
    assert not (root / "models/train/network.keras").exists()
    assert not (root / "models/export/saved_model").exists()
    descriptor = project.read_json("models/export/model.json")
    assert descriptor["family"] == "sklearn"
    assert descriptor["estimator"] == "logistic_regression"
    assert project.read_json("reports/parity.json")["passed"] is True
    assert project.read_json("reports/metrics.json")["accuracy"] > 0.9
