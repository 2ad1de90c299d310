"""The gate's rules on plain dicts, and its CLI against a real (empty) MLflow store."""

from __future__ import annotations

import json
import shutil

import mlflow
import pandas as pd
import pytest

from model_spec.descriptor import InputSpec, Lineage, ModelDescriptor, OnnxSpec
from model_spec.task import Task
from pipeline.config import GateParams, load_params
from pipeline.errors import PipelineError
from pipeline.registry import default_model_name
from pipeline.stages.gate import (
    Champion,
    baseline_checks,
    champion_checks,
    check_gate_params,
    comparability,
    decide,
    failure_message,
    floor_checks,
    golden_checks,
    leaf_setting,
    leakage_checks,
    main,
    render_markdown,
    status_checks,
)
from tests.conftest import REPO_ROOT

GATE = GateParams(
    min={"multiclass": {"f1_macro": 0.90, "roc_auc_ovr": 0.95}, "regression": {"r2": 0.5}},
    max_regression={"multiclass": {"f1_macro": 0.01, "roc_auc_ovr": 0.01}},
    baseline_margin={"multiclass": {"log_loss": 0.1}, "regression": {"rmse": 0.1, "r2": 0.1}},
)
FLOORS = GATE.min["multiclass"]
MAX_REGRESSION = GATE.max_regression["multiclass"]
GOOD = {"accuracy": 0.97, "f1_macro": 0.96, "roc_auc_ovr": 0.99, "log_loss": 0.08, "rows": 69}
PARITY_OK = {"passed": True, "max_abs_diff": 3e-8, "tolerance": 1e-5}
VALID = {"success": True}
CANDIDATE = {"run_id": "abc", "estimator": "logistic_regression"}


def _by_name(checks):
    return {c.name: c for c in checks}


# ---------------------------------------------------------------------------- absolute thresholds
def test_floors_pass_and_fail_naming_metric_value_and_threshold():
    checks = _by_name(floor_checks({"f1_macro": 0.85, "roc_auc_ovr": 0.97}, FLOORS))
    f1, auc = checks["floor.f1_macro"], checks["floor.roc_auc_ovr"]
    assert not f1.passed
    assert (f1.value, f1.threshold, f1.op) == (0.85, 0.90, ">=")
    assert f1.detail == (
        "f1_macro is 0.8500, below the minimum 0.9000 (gate.min.multiclass.f1_macro in "
        "params.yaml: set the bounds your data needs)."
    )
    assert auc.passed and auc.value == 0.97


def test_a_floor_on_log_loss_is_a_ceiling():
    (failed,) = floor_checks({"log_loss": 0.31}, {"log_loss": 0.2})
    assert not failed.passed and failed.op == "<="
    assert failed.detail.startswith("log_loss is 0.3100, above the maximum 0.2000 (gate.min.")
    (passed,) = floor_checks({"log_loss": 0.12}, {"log_loss": 0.2})
    assert passed.passed


def test_a_metric_missing_from_the_metrics_fails_its_floor():
    (check,) = floor_checks({"accuracy": 0.99}, {"f1_macro": 0.9})
    assert not check.passed and check.value is None
    assert "f1_macro is missing" in check.detail


def test_unknown_or_negative_gate_params_are_named():
    def params(**blocks):
        return GateParams(**{"min": {}, "max_regression": {}, "baseline_margin": {}, **blocks})

    with pytest.raises(
        PipelineError,
        match=r"gate\.min\.multiclass\.f1: unknown metric 'f1' for a multiclass task; known: ",
    ):
        check_gate_params(params(min={"multiclass": {"f1": 0.9}}))
    with pytest.raises(PipelineError, match=r"unknown metric 'f1_macro' for a regression task"):
        check_gate_params(params(min={"regression": {"f1_macro": 0.9}}))
    with pytest.raises(PipelineError, match=r"gate\.min: unknown task 'multi'"):
        check_gate_params(params(min={"multi": {"f1_macro": 0.9}}))
    with pytest.raises(PipelineError, match=r"gate\.max_regression\.binary\.log_loss must be >= 0"):
        check_gate_params(params(max_regression={"binary": {"log_loss": -0.1}}))
    with pytest.raises(PipelineError, match=r"gate\.baseline_margin\.regression\.rmse must be in"):
        check_gate_params(params(baseline_margin={"regression": {"rmse": 1.5}}))
    check_gate_params(GATE)
    from pipeline.config import load_params

    check_gate_params(load_params(REPO_ROOT / "params.yaml").gate)  # the project's own


def test_parity_and_validation_must_have_passed():
    checks = _by_name(
        status_checks({"passed": False, "max_abs_diff": 0.07, "tolerance": 1e-5}, {"success": 0})
    )
    assert not checks["parity"].passed and not checks["validation"].passed
    assert checks["parity"].detail == (
        "export parity failed: max abs difference 0.0700 > tolerance 1.00e-05."
    )
    assert checks["parity"].value == 0.07 and checks["parity"].threshold == 1e-5
    ok = _by_name(status_checks(PARITY_OK, VALID))
    assert ok["parity"].passed and ok["validation"].passed


# ---------------------------------------------------------------------------- vs the champion
def test_the_candidate_may_be_worse_than_the_champion_by_the_margin_and_no_more():
    champion = Champion("3", "run3", metrics={"f1_macro": 0.95, "roc_auc_ovr": 0.99})
    within = _by_name(
        champion_checks({"f1_macro": 0.941, "roc_auc_ovr": 0.99}, champion, MAX_REGRESSION)
    )
    assert within["vs_champion.f1_macro"].passed
    assert within["vs_champion.f1_macro"].threshold == pytest.approx(0.94)

    beyond = _by_name(
        champion_checks({"f1_macro": 0.93, "roc_auc_ovr": 0.995}, champion, MAX_REGRESSION)
    )
    f1 = beyond["vs_champion.f1_macro"]
    assert not f1.passed and beyond["vs_champion.roc_auc_ovr"].passed
    assert f1.value == 0.93 and f1.threshold == pytest.approx(0.94)
    assert f1.detail == (
        "f1_macro is 0.9300, more than 0.0100 below the champion's 0.9500 (version 3): "
        "threshold 0.9400."
    )


def test_a_lower_is_better_metric_is_compared_the_other_way():
    champion = Champion("2", "run2", metrics={"log_loss": 0.10})
    margins = {"log_loss": 0.02}
    (better,) = champion_checks({"log_loss": 0.05}, champion, margins)
    (within,) = champion_checks({"log_loss": 0.115}, champion, margins)
    (worse,) = champion_checks({"log_loss": 0.13}, champion, margins)
    assert better.passed and within.passed and not worse.passed
    assert worse.op == "<=" and worse.threshold == pytest.approx(0.12)
    assert "log_loss is 0.1300, more than 0.0200 above the champion's 0.1000" in worse.detail


def test_a_champion_that_cannot_be_scored_fails_the_gate():
    champion = Champion("4", "run4", error="the test split has no column(s) bill_length_mm.")
    report = decide(GOOD, PARITY_OK, VALID, GATE, "m", CANDIDATE, champion, GOOD)
    assert not report.passed and report.failed == ["vs_champion"]
    assert "could not be scored" in report.checks[-1].detail
    assert "bill_length_mm" in report.checks[-1].detail


def test_decide_with_a_champion_compares_the_onnx_scores_and_reports_the_version():
    champion = Champion("5", "run5", metrics={**GOOD, "f1_macro": 0.99})
    onnx_scores = {**GOOD, "f1_macro": 0.975}
    report = decide(GOOD, PARITY_OK, VALID, GATE, "m", CANDIDATE, champion, onnx_scores)
    data = report.to_dict()
    assert data["compared_with_champion"] is True and data["champion_version"] == "5"
    check = _by_name(report.checks)["vs_champion.f1_macro"]
    assert check.value == 0.975 and not check.passed  # 0.975 < 0.99 - 0.01
    assert "version 5" in report.note
    markdown = render_markdown(report)
    assert "# Model gate: FAILED" in markdown and "| f1_macro | 0.9750 | 0.9900 |" in markdown


def test_without_a_champion_only_absolute_thresholds_apply_and_the_report_says_so():
    report = decide(
        GOOD, PARITY_OK, VALID, GATE, "m", CANDIDATE, None, registry_note="No champion yet."
    )
    assert report.passed and report.failed == []
    names = [c.name for c in report.checks]
    assert names == ["floor.f1_macro", "floor.roc_auc_ovr", "parity", "validation", "leakage"]
    data = report.to_dict()
    assert data["compared_with_champion"] is False and data["champion_version"] is None
    assert data["note"] == "No champion yet. Absolute thresholds only."
    assert "Absolute thresholds only." in render_markdown(report)


# ---------------------------------------------------------------------------- the descriptor
def descriptor_for(run_id: str, **changes) -> ModelDescriptor:
    """A valid schema-2 descriptor of a two-input penguins classifier."""
    fields = {
        "name": "penguins-classifier",
        "task": Task.MULTICLASS,
        "estimator": "logistic_regression",
        "family": "sklearn",
        "target": "species",
        "classes": ("Adelie", "Chinstrap", "Gentoo"),
        "inputs": (
            InputSpec("bill length", "bill_length", "numeric", True, 30.0, 60.0),
            InputSpec("island", "island", "categorical", True, categories=("Biscoe", "Dream")),
        ),
        "onnx": OnnxSpec(),
        "lineage": Lineage(run_id=run_id),
    }
    return ModelDescriptor(**{**fields, **changes})


def test_the_cli_refuses_a_descriptor_of_another_schema_in_one_sentence(stage_files, capsys):
    root, _ = stage_files
    raw = json.loads((root / "export" / "model.json").read_text())
    (root / "export" / "model.json").write_text(json.dumps({**raw, "schema_version": 1}))
    assert _run_gate(root, GOOD) == 1
    err = capsys.readouterr().err
    assert "model descriptor: descriptor schema_version 1 is not 2" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- the CLI
@pytest.fixture
def stage_files(tmp_path, mlflow_store, monkeypatch):
    """Inputs of the gate stage and a real pipeline run in a fresh store (no registered model)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # registry.model_name: auto reads the task from the contract
    shutil.copy2(REPO_ROOT / "data" / "contract.yaml", tmp_path / "data" / "contract.yaml")
    # MLflow keeps the URI of the last configure() in a module global: point it here.
    mlflow.set_tracking_uri(mlflow_store)
    experiment = mlflow.MlflowClient().create_experiment(
        "tabular-mlops", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    model_dir = tmp_path / "export"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"not scored when there is no champion")
    descriptor_for(run.info.run_id).write(model_dir)
    golden = {"tolerance": 1e-5, "rows": [{"inputs": {"bill length": 40.0, "island": "Dream"}}]}
    (model_dir / "golden.json").write_text(json.dumps(golden))
    for name, payload in (("parity.json", PARITY_OK), ("result.json", VALID)):
        (tmp_path / name).write_text(json.dumps(payload))
    # Splits for the trivial baseline: 50 % Adelie in training, so the baseline's log loss on
    # this test split is that of the shares (0.5, 0.25, 0.25).
    species = ["Adelie"] * 6 + ["Chinstrap"] * 3 + ["Gentoo"] * 3
    pd.DataFrame({"species": species}).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame({"species": species[::3]}).to_parquet(tmp_path / "test.parquet")
    yield tmp_path, run.info.run_id
    mlflow.set_tracking_uri(None)  # no stale store for later tests in this process


def _run_gate(root, metrics: dict) -> int:
    (root / "metrics.json").write_text(json.dumps(metrics))
    return main(
        [
            "--params", str(REPO_ROOT / "params.yaml"), "--metrics", str(root / "metrics.json"),
            "--parity", str(root / "parity.json"), "--validation", str(root / "result.json"),
            "--model-dir", str(root / "export"), "--test", str(root / "test.parquet"),
            "--train", str(root / "train.parquet"),
            "--out", str(root / "out" / "gate.json"), "--report", str(root / "out" / "gate.md"),
        ]
    )  # fmt: skip


def test_cli_fails_naming_each_failed_check_and_still_writes_both_reports(stage_files, capsys):
    root, run_id = stage_files
    code = _run_gate(root, {**GOOD, "f1_macro": 0.4123, "roc_auc_ovr": 0.6, "log_loss": 1.0})
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("gate failed: 3 of 8 checks failed for 'penguins-classifier':")
    assert "floor.f1_macro: f1_macro is 0.4123, below the minimum 0.5000 (gate.min." in err
    assert "floor.roc_auc_ovr: roc_auc_ovr is 0.6000, below the minimum 0.7000 (gate.min." in err
    # The baseline's log loss: -(2 ln 0.5 + ln 0.25 + ln 0.25) / 4 = 1.0397; 0.1 of the way
    # to 0 is 0.9357, and 1.0 is not there.
    assert (
        "vs_baseline.log_loss: log_loss 1.0000 does not beat the trivial baseline's 1.0397 by "
        "the margin 0.1000 of the gap to perfect (needs <= 0.9357)."
    ) in err

    report = json.loads((root / "out" / "gate.json").read_text())
    assert report["passed"] is False
    assert report["failed"] == ["floor.f1_macro", "floor.roc_auc_ovr", "vs_baseline.log_loss"]
    f1 = next(c for c in report["checks"] if c["name"] == "floor.f1_macro")
    assert (f1["value"], f1["threshold"], f1["passed"]) == (0.4123, 0.5, False)
    markdown = (root / "out" / "gate.md").read_text()
    assert "# Model gate: FAILED" in markdown
    assert "| `floor.f1_macro` | 0.4123 | >= 0.5000 | **FAIL** |" in markdown

    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.metrics["gate_passed"] == 0.0 and run.data.tags["gate_passed"] == "false"
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "gate")}
    assert logged == {"gate/gate.json", "gate/gate.md"}


def test_cli_without_a_registered_model_passes_on_absolute_thresholds_and_says_so(
    stage_files, capsys
):
    root, run_id = stage_files
    assert _run_gate(root, GOOD) == 0
    report = json.loads((root / "out" / "gate.json").read_text())
    assert report["passed"] is True and report["compared_with_champion"] is False
    assert report["note"] == (
        "Registered model 'penguins-classifier' does not exist yet, so there is no champion. "
        "Absolute thresholds only."
    )
    assert "gate: all 8 checks passed." in capsys.readouterr().out
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.metrics["gate_passed"] == 1.0 and run.data.tags["gate_passed"] == "true"


# ---------------------------------------------------------------------------- golden rows (item 8)
def _golden(*inputs, synthetic=None):
    rows = [{"case": f"row {i}", "inputs": row} for i, row in enumerate(inputs)]
    if synthetic:
        rows[-1]["synthetic"] = synthetic
    return {"tolerance": 1e-5, "rows": rows}


def test_golden_rows_that_pass_the_models_own_input_rules_pass():
    d = descriptor_for("r")
    golden = _golden(
        {"bill length": 40.0, "island": "Biscoe"},
        {"bill length": None, "island": None},
        {"bill length": 40.0, "island": "__unseen__"},
        synthetic="unseen_category",
    )
    (check,) = golden_checks(d, golden)
    assert check.passed and check.detail == "all 3 golden rows pass the model's input rules."


def test_a_null_golden_value_for_a_column_that_is_not_nullable_fails_the_gate():
    # A table with no missing values: no input is nullable (item 8, e.g. breast_cancer).
    d = descriptor_for(
        "r",
        inputs=(
            InputSpec("mean radius", "mean_radius", "numeric", False, 5.0, 30.0),
            InputSpec("island", "island", "categorical", False, categories=("Biscoe",)),
        ),
    )
    golden = _golden(
        {"mean radius": 14.1, "island": "Biscoe"},
        {"mean radius": None, "island": None},
        {"mean radius": 99.0, "island": "Dream"},
    )
    (check,) = golden_checks(d, golden)
    assert not check.passed and check.value == 4
    assert check.detail.startswith(
        "4 golden value(s) break the model's own input rules (golden[1].mean radius: must not "
        "be null; golden[1].island: must not be null; golden[2].mean radius: 99.0 is outside "
        "[5.0, 30.0]; and 1 more): a server would refuse its own golden file"
    )
    report = decide(GOOD, PARITY_OK, VALID, GATE, "m", CANDIDATE, None, descriptor=d, golden=golden)
    assert not report.passed and report.failed == ["golden_inputs"]


# ---------------------------------------------------------------------------- leakage
def test_without_a_leakage_section_the_check_passes_and_says_it_did_not_run():
    (check,) = leakage_checks({"success": True})
    assert check.passed
    assert check.detail == "not checked: the validation result has no 'leakage' section."


def test_a_leaking_feature_fails_the_gate_naming_column_and_score_unless_allowed():
    leakage = {
        "threshold": 0.95,
        "allowed": ["id_hash"],
        "suspects": [
            {"column": "flipper_code", "score": 0.998, "metric": "roc_auc"},
            {"column": "id_hash", "score": 0.99, "metric": "roc_auc"},
        ],
    }
    (check,) = leakage_checks({"success": True, "leakage": leakage})
    assert not check.passed and check.value == 0.998 and check.threshold == 0.95
    assert check.detail.startswith(
        "feature(s) 'flipper_code' (roc_auc 0.9980) alone predict the target at or above 0.9500"
    )
    assert "id_hash" not in check.detail
    leakage["allowed"].append("flipper_code")
    (check,) = leakage_checks({"success": True, "leakage": leakage})
    assert check.passed
    assert check.detail == (
        "no feature alone predicts the target at or above 0.9500 (flipper_code, id_hash allowed "
        "by the contract)."
    )
    report = decide(GOOD, PARITY_OK, {"success": True, "leakage": {**leakage, "allowed": []}},
                    GATE, "m", CANDIDATE, None)  # fmt: skip
    assert report.failed == ["leakage"]
    assert "leakage: feature(s) 'flipper_code' (roc_auc 0.9980), 'id_hash' (roc_auc 0.9900)" in (
        failure_message(report)
    )


# ---------------------------------------------------------------------------- comparability
def test_a_champion_of_another_task_or_other_inputs_is_not_comparable():
    ours = descriptor_for("r")
    assert comparability(ours, descriptor_for("c")) is None
    regression = descriptor_for("c", task=Task.REGRESSION, classes=(), target="body_mass_g")
    assert comparability(ours, regression) == (
        "it is a regression model and this candidate is multiclass"
    )
    other = descriptor_for(
        "c",
        inputs=(
            InputSpec("species", "species", "categorical", False, categories=("a", "b")),
            InputSpec("island", "island", "numeric", True),
        ),
    )
    assert comparability(ours, other) == (
        "its inputs differ (only the champion has 'species'; only the candidate has "
        "'bill length'; the kind differs for 'island')"
    )
    assert comparability(ours, descriptor_for("c", classes=("x", "y"))) == (
        "its classes are 'x', 'y', the candidate's 'Adelie', 'Chinstrap', 'Gentoo'"
    )


def test_a_skipped_champion_gives_one_line_naming_the_reason_and_the_model_name_to_change():
    champion = Champion("3", "run-9", skipped="its inputs differ (only the champion has 'x')")
    report = decide(
        GOOD, PARITY_OK, VALID, GATE, "penguins-classifier", CANDIDATE, champion,
        suggested_name="wine-classifier",
    )  # fmt: skip
    assert report.passed and not any(c.name.startswith("vs_champion") for c in report.checks)
    assert report.note == (
        "Not compared with the champion of 'penguins-classifier' (version 3): its inputs differ "
        "(only the champion has 'x'), so it is a model of other data. Give this data its own "
        "registered model: set registry.model_name in params.yaml (e.g. 'wine-classifier'). "
        "Absolute thresholds only."
    )
    assert "\n" not in report.note
    assert report.to_dict()["compared_with_champion"] is False


def test_the_default_model_name_follows_the_data():
    assert default_model_name("builtin:penguins", Task.MULTICLASS) == "penguins-classifier"
    assert default_model_name("data/My Table.csv", Task.REGRESSION) == "my-table-regressor"
    assert default_model_name("s3://bucket/x/wine.parquet?v=1", Task.BINARY) == ("wine-classifier")
    assert default_model_name("C:\\data\\île.csv", Task.BINARY) == "ile-classifier"


# ---------------------------------------------------------------------------- regression, baseline
def test_regression_bounds_are_floors_for_r2_and_ceilings_for_rmse():
    checks = _by_name(
        floor_checks({"rmse": 3.0, "r2": 0.62}, {"rmse": 2.5, "r2": 0.5}, Task.REGRESSION)
    )
    assert not checks["floor.rmse"].passed and checks["floor.rmse"].op == "<="
    assert checks["floor.rmse"].detail.startswith(
        "rmse is 3.0000, above the maximum 2.5000 (gate.min.regression.rmse in params.yaml"
    )
    assert checks["floor.r2"].passed and checks["floor.r2"].op == ">="


def test_the_candidate_must_beat_the_trivial_baseline_by_a_share_of_the_gap_to_perfect():
    baseline = {"rmse": 1.0, "r2": -0.01, "log_loss": 1.04, "f1_macro": 0.2}
    checks = _by_name(
        baseline_checks({"rmse": 0.95, "r2": 0.3}, baseline, {"rmse": 0.1, "r2": 0.1})
    )
    assert not checks["vs_baseline.rmse"].passed
    assert checks["vs_baseline.rmse"].threshold == pytest.approx(0.9)  # 1.0 * (1 - 0.1)
    assert checks["vs_baseline.rmse"].detail.startswith(
        "rmse 0.9500 does not beat the trivial baseline's 1.0000 by the margin 0.1000 of the gap "
        "to perfect (needs <= 0.9000). The model has learnt something (rmse is better than "
        "the baseline's), but less than the margin asks"
    )
    assert checks["vs_baseline.r2"].passed
    assert checks["vs_baseline.r2"].threshold == pytest.approx(-0.01 + 0.1 * 1.01)
    (nan,) = baseline_checks({"roc_auc": float("nan")}, {"roc_auc": 0.5}, {"roc_auc": 0.1})
    assert not nan.passed and "cannot be compared with the baseline" in nan.detail


def test_decide_applies_the_tasks_own_blocks_and_compares_a_regression_champion():
    metrics = {"rmse": 0.5, "mae": 0.4, "r2": 0.7}
    champion = Champion("2", "run2", metrics={"rmse": 0.45, "mae": 0.4, "r2": 0.72})
    gate = GateParams(
        min=GATE.min, baseline_margin=GATE.baseline_margin,
        max_regression={"regression": {"r2": 0.01, "rmse": 0.01}},
    )  # fmt: skip
    report = decide(
        metrics, PARITY_OK, VALID, gate, "diabetes-regressor", CANDIDATE, champion,
        candidate_onnx_metrics=metrics, task=Task.REGRESSION,
        baseline={"rmse": 1.0, "mae": 0.8, "r2": 0.0},
    )  # fmt: skip
    names = [c.name for c in report.checks]
    assert names[:3] == ["floor.r2", "vs_baseline.rmse", "vs_baseline.r2"]
    assert report.failed == ["vs_champion.r2", "vs_champion.rmse"]
    rmse = _by_name(report.checks)["vs_champion.rmse"]
    assert rmse.op == "<=" and rmse.threshold == pytest.approx(0.46)


def test_a_passing_leakage_check_shows_the_best_feature_score_below_the_threshold():
    """It showed "0.0000 | == 0.9800 | pass", which reads as false."""
    leakage = {"threshold": 0.98, "allowed": [], "suspects": [],
               "scores": {"island": 0.7807, "sex": 0.3246, "empty": float("nan")}}  # fmt: skip
    (check,) = leakage_checks({"success": True, "leakage": leakage})
    assert (check.passed, check.value, check.op, check.threshold) == (True, 0.7807, "<", 0.98)
    assert check.detail == (
        "no feature alone predicts the target at or above 0.9800 (the best, 'island', scores "
        "0.7807)."
    )


def test_overconfident_probabilities_are_named_when_labels_beat_the_baseline():
    """One feature, random forest with min_samples_leaf 1: f1 well above the baseline, log
    loss 1.458 against 0.624 needed. "The model has learnt little" sent the user to the
    features; the probabilities are what is wrong."""
    baseline = {"log_loss": 0.693, "f1_macro": 0.33}
    checks = _by_name(
        baseline_checks({"log_loss": 1.458, "f1_macro": 0.73}, baseline,
                        {"log_loss": 0.1, "f1_macro": 0.1})
    )  # fmt: skip
    assert checks["vs_baseline.f1_macro"].passed and not checks["vs_baseline.log_loss"].passed
    detail = checks["vs_baseline.log_loss"].detail
    assert "learnt little" not in detail
    assert (
        "Its labels or ranking beat the baseline, but log_loss does not: the probabilities "
        "are overconfident"
    ) in detail
    # Nothing beats the baseline: it has learnt little, as before.
    (alone,) = baseline_checks({"log_loss": 1.458}, baseline, {"log_loss": 0.1})
    assert "The model has learnt little" in alone.detail


def test_a_probability_metric_better_than_the_baseline_is_not_called_overconfident():
    """A weak-signal churn table under logistic regression: log_loss 0.2734 against the
    baseline's 0.2868, not by the margin, while f1 passed. The hint blamed deep trees'
    overconfident probabilities, on a model that is neither."""
    baseline = {"log_loss": 0.2868, "f1_macro": 0.48}
    checks = _by_name(
        baseline_checks({"log_loss": 0.2734, "f1_macro": 0.6}, baseline,
                        {"log_loss": 0.1, "f1_macro": 0.1})
    )  # fmt: skip
    detail = checks["vs_baseline.log_loss"].detail
    assert "overconfident" not in detail
    assert detail.endswith(
        "The model has learnt something (log_loss is better than the baseline's), but less "
        "than the margin asks: the features carry a weak signal. Add more informative features, "
        "or lower gate.baseline_margin if this is as good as the problem allows."
    )


def test_labels_that_fail_beside_probabilities_that_pass_are_named_as_imbalance():
    """Imbalanced classes under keras_mlp: ROC AUC 0.88 and log_loss beating the baseline, but
    every row labelled the majority class. "Learnt little beyond the class shares" was wrong."""
    baseline = {"log_loss": 0.30, "f1_macro": 0.48}
    checks = _by_name(
        baseline_checks({"log_loss": 0.22, "f1_macro": 0.48}, baseline,
                        {"log_loss": 0.1, "f1_macro": 0.1})
    )  # fmt: skip
    assert checks["vs_baseline.log_loss"].passed
    detail = checks["vs_baseline.f1_macro"].detail
    assert "learnt little" not in detail
    assert detail.endswith(
        "Its probabilities or ranking beat the baseline, but its labels (f1_macro) do not: with "
        "imbalanced classes the most likely class is nearly always the majority one. Gate on "
        "log_loss or roc_auc in gate.baseline_margin instead, or balance the classes in the data."
    )


def test_an_undefined_metric_is_not_blamed_on_the_bound():
    (check,) = floor_checks({"roc_auc": float("nan")}, {"roc_auc": 0.7}, Task.BINARY)
    assert check.passed is False
    assert check.detail.startswith("roc_auc is undefined on the test split (nan): its rows hold")
    assert "set the bounds your data needs" not in check.detail


def test_the_learnt_little_hint_comes_once_and_names_the_mean_for_regression():
    checks = baseline_checks(
        {"rmse": 10.5, "mae": 8.2}, {"rmse": 10.0, "mae": 8.0}, {"rmse": 0.1, "mae": 0.1}
    )
    hinted = [c for c in checks if "learnt little" in c.detail]
    assert [c.name for c in checks if not c.passed] == ["vs_baseline.rmse", "vs_baseline.mae"]
    assert len(hinted) == 1
    assert "beyond the training mean" in hinted[0].detail


def test_a_test_split_too_small_to_judge_on_is_said_with_the_verdict():
    # On longley (16 rows) the test split held 4: the gate passed, and nothing said that each
    # metric was measured on 4 rows.
    small = decide(GOOD, PARITY_OK, VALID, GATE, "m", CANDIDATE, None, test_rows=4)
    assert small.passed
    assert small.warning == (
        "Warning: the test split holds only 4 rows, so each metric moves by about 25 points "
        "per row: the verdict says little. Give the test split more rows (more data, or a "
        "larger preprocess.test_size)."
    )
    assert small.to_dict()["warning"] == small.warning
    assert f"**{small.warning}**" in render_markdown(small)
    failing = decide({**GOOD, "f1_macro": 0.1}, PARITY_OK, VALID, GATE, "m", CANDIDATE, None,
                     test_rows=4)  # fmt: skip
    assert not failing.passed and failing.warning in failure_message(failing)
    enough = decide(GOOD, PARITY_OK, VALID, GATE, "m", CANDIDATE, None, test_rows=30)
    assert enough.warning == "" and "Warning" not in render_markdown(enough)


def test_a_model_that_scores_exactly_the_baseline_is_told_what_forbids_its_splits():
    """spector (32 rows) under lightgbm's min_child_samples 20: no split, every row the class
    shares. It was told "has learnt something (log_loss is better than the baseline's)" with
    0.6035 against 0.6035: a difference in the 10th digit counted as better."""
    baseline = {"log_loss": 0.603510, "f1_macro": 0.4}
    margins = {"log_loss": 0.1, "f1_macro": 0.1}
    metrics = {"log_loss": 0.603510 - 3e-10, "f1_macro": 0.4}
    leaf = "train.lightgbm.min_child_samples is 20"
    checks = baseline_checks(metrics, baseline, margins, "lightgbm", leaf)
    assert [c.passed for c in checks] == [False, False]
    assert "learnt something" not in checks[0].detail
    assert checks[0].detail.endswith(
        "The model has learnt nothing: every metric equals the trivial baseline's, as when it "
        "gives every row the same output (no split was allowed, or no feature varies). On a "
        "small table the estimator's least rows per leaf can forbid every split; "
        "train.lightgbm.min_child_samples is 20, so a split needs twice that many training "
        "rows: lower it in params.yaml, or add rows."
    )
    assert checks[1].detail.endswith("(needs >= 0.4600).")  # the hint comes once
    # one metric really better: the weak-signal hint, as before
    better = baseline_checks({**metrics, "log_loss": 0.59}, baseline, margins, "lightgbm", leaf)
    assert "The model has learnt something (log_loss is better" in better[0].detail


def test_the_leaf_setting_is_named_only_where_it_can_forbid_a_split():
    train = load_params(REPO_ROOT / "params.yaml").train
    assert leaf_setting(train, "lightgbm") == "train.lightgbm.min_child_samples is 20"
    assert leaf_setting(train, "hist_gradient_boosting") == (
        "train.hist_gradient_boosting.min_samples_leaf is 20"
    )
    assert leaf_setting(train, "random_forest") == ""  # min_samples_leaf: 1 forbids nothing
    assert leaf_setting(train, "keras_mlp") == ""


def test_the_overconfidence_hint_names_the_estimators_own_settings():
    baseline = {"log_loss": 0.693, "f1_macro": 0.33}
    metrics, margins = {"log_loss": 1.458, "f1_macro": 0.73}, {"log_loss": 0.1, "f1_macro": 0.1}
    (loss, _) = baseline_checks(metrics, baseline, margins, "lightgbm")
    assert "Regularise the estimator in train.lightgbm (min_child_samples, num_leaves, " in (
        loss.detail
    )
    (loss, _) = baseline_checks(metrics, baseline, margins, "random_forest")
    assert "in train.random_forest (min_samples_leaf, max_depth)" in loss.detail
