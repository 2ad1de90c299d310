"""Tasks end to end through the real ``dvc repro`` on tables that ship inside scikit-learn.

* breast cancer: a binary target and column names with spaces (``mean radius``), through
  export: the graph's inputs are the documented ONNX names, parity holds on the test split;
* diabetes: a numeric target, so a regression task: regression metrics, predicted-vs-actual
  and residual plots, `dvc plots show` loading every plot definition, and `dvc exp run -S
  train.estimator=...` switching estimators.

Each table is written as a local CSV that ``data.source`` names, with a contract drafted for
it by ``tests.bundled``. About 2-3 minutes in all on a quiet 2-core machine.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests import bundled
from tests.integration.conftest import Project, make_project

pytestmark = pytest.mark.integration


def _ran(proc) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", proc.stdout)


def _project(tmp_path_factory, name: str, frame, target: str, estimator: str) -> Project:
    project = make_project(tmp_path_factory.mktemp(name) / "project")
    frame.to_csv(project.root / "data" / f"{name}.csv", index=False)
    contract = bundled.contract_dict(frame, target)
    (project.root / "data" / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    project.set_params(
        **{
            "data.source": f"data/{name}.csv",
            "train.estimator": estimator,
            "registry.model_name": f"{name}-model",
        }
    )
    project.commit(f"{name} table")
    return project


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    project = _project(tmp_path_factory, "diabetes", bundled.diabetes(), "progression", "ridge")
    return project, project.dvc("repro", "evaluate")


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    frame = bundled.breast_cancer()
    project = _project(tmp_path_factory, "cancer", frame, "diagnosis", "lightgbm")
    return project, project.dvc("repro", "export")


def test_a_numeric_target_trains_and_evaluates_a_regression_model(regression):
    project, proc = regression
    assert _ran(proc) == ["ingest", "validate", "preprocess", "train", "evaluate"]
    assert "ridge (sklearn, regression)" in proc.stdout
    metrics = project.read_json("reports/metrics.json")
    assert {"rmse", "mae", "r2", "median_ae", "max_error", "mape", "rows"} <= set(metrics)
    assert "accuracy" not in metrics
    assert 0.3 < metrics["r2"] < 1 and 30 < metrics["rmse"] < 80  # diabetes: R² about 0.45
    trained = project.read_json("models/train/trained.json")
    assert trained == {
        "estimator": "ridge",
        "family": "sklearn",
        "task": "regression",
        "classes": [],
    }
    root = project.root
    for rel in (
        "reports/plots/predicted_vs_actual/predicted_vs_actual.csv",
        "reports/plots/residuals/residuals.csv",
        "reports/figures/predicted_vs_actual.png",
        "reports/figures/residuals.png",
    ):
        assert (root / rel).is_file(), rel
    assert not list((root / "reports/plots/roc").iterdir())  # there, but empty
    history = (root / "reports/train_history.csv").read_text().splitlines()[0].split(",")
    assert {"step", "val_loss", "val_score", "val_rmse", "val_r2"} <= set(history)


def test_every_plot_definition_loads_for_a_regression_task(regression):
    project, _ = regression
    proc = project.dvc("plots", "show", "-o", "plots-html")
    assert "failed to load" not in (proc.stdout + proc.stderr).lower()
    html = (project.root / "plots-html" / "index.html").read_text().lower()
    assert "predicted vs actual" in html and "residual" in html


def test_exp_run_switches_the_regression_estimator(regression):
    project, _ = regression
    before = project.read_json("reports/metrics.json")
    proc = project.dvc("exp", "run", "-S", "train.estimator=lightgbm", "evaluate")
    ran = _ran(proc)
    assert {"train", "evaluate"} <= set(ran) and "preprocess" not in ran
    assert project.read_json("models/train/trained.json")["estimator"] == "lightgbm"
    after = project.read_json("reports/metrics.json")
    assert after["rmse"] != before["rmse"] and after["r2"] > 0.2


def test_a_classifier_as_the_estimator_of_a_regression_task_is_one_paragraph(regression):
    project, _ = regression
    proc = project.dvc(
        "exp", "run", "-S", "train.estimator=logistic_regression", "train", check=False
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "'logistic_regression' does not support a regression task" in out
    assert "Traceback" not in out


def test_binary_table_with_spaces_in_column_names_exports_with_parity(binary):
    project, proc = binary
    assert _ran(proc)[-1] == "export"
    metrics = project.read_json("reports/metrics.json")
    assert {"roc_auc", "average_precision", "f1_macro"} <= set(metrics)
    assert metrics["roc_auc"] > 0.95
    parity = project.read_json("reports/parity.json")
    assert parity["passed"] is True and parity["max_abs_diff"] <= 1e-5
    import onnx

    graph = onnx.load(str(project.root / "models/export/model.onnx")).graph
    names = [i.name for i in graph.input]
    assert "mean_radius" in names and "worst_fractal_dimension" in names
    assert [o.name for o in graph.output] == ["label", "probabilities"]
    project.dvc("plots", "show", "-o", "plots-html")
    assert (project.root / "reports/plots/confusion/confusion.csv").is_file()
