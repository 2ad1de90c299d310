"""The helpers of ``benchmarks/check_estimators.py`` (the slow check itself is ``make
check-estimators``, not part of the test suite): which pairs it runs, how it compares the
server's answers with golden.json, the bad row it sends and the table it prints."""

from __future__ import annotations

import pytest

from benchmarks import check_estimators as ce

PENGUINS = ce.TABLES["penguins"]
DIABETES = ce.TABLES["diabetes"]


def test_every_registry_estimator_is_paired_with_the_tables_of_its_tasks():
    pairs = ce.supported_pairs([PENGUINS, DIABETES], ce.registry_tasks())
    names = {table.name: [e for t, e in pairs if t is table] for table in (PENGUINS, DIABETES)}
    assert names["penguins"] == [
        "logistic_regression", "random_forest", "hist_gradient_boosting", "lightgbm",
        "xgboost", "keras_mlp",
    ]  # fmt: skip
    assert names["diabetes"] == [
        "ridge", "random_forest", "hist_gradient_boosting", "lightgbm", "xgboost", "keras_mlp",
    ]  # fmt: skip


def test_a_chosen_estimator_narrows_the_pairs_and_an_unknown_one_is_refused():
    tasks = ce.registry_tasks()
    pairs = ce.supported_pairs([PENGUINS, DIABETES], tasks, {"ridge"})
    assert [(t.name, e) for t, e in pairs] == [("diabetes", "ridge")]
    with pytest.raises(SystemExit, match=r"unknown estimator\(s\) \['ridg'\]"):
        ce.supported_pairs([PENGUINS], tasks, {"ridg"})


GOLDEN_CLASSES = {
    "tolerance": 1e-5,
    "rows": [
        {"case": "test", "inputs": {"x": 1.0, "c": "a"}, "label": "A", "probabilities": [0.9, 0.1]},
        {"case": "unseen", "inputs": {"x": 1.0, "c": "zz"}, "synthetic": "unseen_category",
         "label": "B", "probabilities": [0.2, 0.8]},
    ],
}  # fmt: skip


def test_golden_rows_split_into_answered_and_refused():
    known, unseen = ce.golden_request(GOLDEN_CLASSES)
    assert [r["case"] for r in known] == ["test"] and [r["case"] for r in unseen] == ["unseen"]
    with pytest.raises(ce.CheckFailure, match="no row the server is meant to answer"):
        ce.golden_request({"rows": GOLDEN_CLASSES["rows"][1:]})


def test_labels_must_be_equal_and_probabilities_within_tolerance():
    known, _ = ce.golden_request(GOLDEN_CLASSES)
    good = [{"label": "A", "probabilities": {"A": 0.900004, "B": 0.099996}}]
    assert ce.compare_predictions(known, good, ["A", "B"], 1e-5) == pytest.approx(4e-6)
    wrong_label = [{"label": "B", "probabilities": {"A": 0.9, "B": 0.1}}]
    with pytest.raises(ce.CheckFailure, match="golden row 0: label 'B', expected 'A'"):
        ce.compare_predictions(known, wrong_label, ["A", "B"], 1e-5)
    drifted = [{"label": "A", "probabilities": {"A": 0.89, "B": 0.11}}]
    with pytest.raises(ce.CheckFailure, match="probabilities differ by 0.01 > tolerance 1e-05"):
        ce.compare_predictions(known, drifted, ["A", "B"], 1e-5)
    with pytest.raises(ce.CheckFailure, match="0 predictions for 1 golden rows"):
        ce.compare_predictions(known, [], ["A", "B"], 1e-5)


def test_regression_values_are_compared_relative_to_their_size():
    rows = [{"inputs": {}, "prediction": 200.0}, {"inputs": {}, "prediction": 0.1}]
    # 200 +/- 1e-4 * 200 = 0.02 passes; near zero the bound is absolute (1e-4).
    assert ce.compare_predictions(rows, [200.015, 0.10005], [], 1e-4) <= 1e-4
    with pytest.raises(ce.CheckFailure, match="golden row 1: prediction 0.1002, expected 0.1"):
        ce.compare_predictions(rows, [200.0, 0.1002], [], 1e-4)
    with pytest.raises(ce.CheckFailure, match="golden row 0: expected a number, got"):
        ce.compare_predictions(rows, [{"value": 200.0}, 0.1], [], 1e-4)


def test_the_bad_row_sets_the_first_numeric_feature_to_a_string():
    descriptor = {
        "inputs": [{"name": "c", "kind": "categorical"}, {"name": "x", "kind": "numeric"}]
    }
    row, field = ce.bad_row(GOLDEN_CLASSES["rows"][0], descriptor)
    assert field == "x" and row == {"x": "not a number", "c": "a"}
    assert GOLDEN_CLASSES["rows"][0]["inputs"]["x"] == 1.0  # the golden row is left alone
    with pytest.raises(ce.CheckFailure, match="no numeric input"):
        ce.bad_row(GOLDEN_CLASSES["rows"][0], {"inputs": descriptor["inputs"][:1]})


def test_the_environment_puts_the_venv_first_and_drops_the_tracking_uri(tmp_path):
    env = ce.env_for(tmp_path, {"PATH": "/usr/bin", "MLFLOW_TRACKING_URI": "http://x"})
    assert env["PATH"] == f"{tmp_path / 'bin'}:/usr/bin"
    assert "MLFLOW_TRACKING_URI" not in env
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3"  # the Makefile's level: no E0000 notes


def test_the_environment_keeps_a_tf_log_level_the_caller_chose(tmp_path):
    env = ce.env_for(tmp_path, {"PATH": "/usr/bin", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_the_table_has_one_row_per_pair_and_names_the_failure():
    results = [
        ce.Result("ridge", "diabetes", "regression", "passed", "r2 0.452", "8 golden ok", 61.2),
        ce.Result("xgboost", "penguins", "multiclass", "FAILED", seconds=30, error="gate: f1"),
    ]
    lines = ce.format_table(results)
    assert lines[2] == "| ridge | diabetes | regression | passed | r2 0.452 | 8 golden ok | 61 |"
    assert lines[3] == "| xgboost | penguins | multiclass | FAILED | - | FAILED: gate: f1 | 30 |"
    assert len(lines) == 4


def test_the_server_log_tail_leaves_out_access_records():
    log = (
        "serve: the export in 'models/export'\n"
        "[ERROR] golden row 3: prediction 126.139, expected 126.639 (tolerance 1e-05)\n"
        '{"time":"2026-12-01T13:23:28+0000","path":"/health/ready","status":503}\n'
    )
    assert ce.server_log_tail(log) == (
        "serve: the export in 'models/export' | "
        "[ERROR] golden row 3: prediction 126.139, expected 126.639 (tolerance 1e-05)"
    )
    assert ce.server_log_tail("") == ""
