"""The estimator registry: every estimator x task fits, converts to ONNX and matches itself.

Tiny real tables (breast cancer: binary, column names with spaces; Palmer Penguins:
multiclass with categories and gaps; diabetes: regression) and small budgets keep this fast;
the parity check runs on the whole held-out part, as export's does.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from model_spec.descriptor import LABEL, PREDICTION, PROBABILITIES, onnx_input_names
from model_spec.task import Task
from pipeline import onnx_export
from pipeline.config import load_params
from pipeline.contract import load_contract
from pipeline.errors import PipelineError
from pipeline.estimators import ESTIMATORS, get_estimator, parity_error
from pipeline.model import NativeModel, load_native_model, save_native_model
from pipeline.stages.preprocess import fit_preprocessor, to_model_frame
from pipeline.stages.train import train_model
from tests import bundled
from tests.conftest import REPO_ROOT

CASES = [(name, task) for name, e in ESTIMATORS.items() for task in Task if task in e.tasks]


@pytest.fixture(scope="module")
def train_params():
    """params.yaml's train block with small budgets (the pipeline uses params.yaml as is)."""
    p = load_params(REPO_ROOT / "params.yaml").train
    p = p.with_block("keras_mlp", epochs=8, patience=3)
    for name in ("random_forest", "lightgbm", "xgboost"):
        p = p.with_block(name, n_estimators=25)
    return p.with_block("hist_gradient_boosting", max_iter=25)


def _split(frame: pd.DataFrame, target: str, stratify: bool):
    from sklearn.model_selection import train_test_split

    by = frame[target] if stratify else None
    rest, test = train_test_split(frame, test_size=0.3, random_state=0, stratify=by)
    by = rest[target] if stratify else None
    train, val = train_test_split(rest, test_size=0.3, random_state=0, stratify=by)
    return train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True)


@pytest.fixture(scope="module")
def tables():
    from palmerpenguins import load_penguins

    cancer = bundled.breast_cancer().sample(200, random_state=0)
    diabetes = bundled.diabetes().sample(200, random_state=0)
    return {
        Task.BINARY: (cancer, "diagnosis", bundled.contract_for(cancer, "diagnosis")),
        Task.MULTICLASS: (
            load_penguins(),
            "species",
            load_contract(REPO_ROOT / "data" / "contract.yaml"),
        ),
        Task.REGRESSION: (diabetes, "progression", bundled.contract_for(diabetes, "progression")),
    }


def _fit(name, task, tables, params):
    frame, target, contract = tables[task]
    assert contract.task is task
    train, val, test = _split(frame, target, task.is_classification)
    pre = fit_preprocessor(train, contract)

    def xy(f):
        y = f[target].to_numpy(float) if task.is_regression else f[target].astype(str).to_numpy()
        return pre.transform(to_model_frame(f, contract)), y

    result = train_model(name, params, *xy(train), *xy(val), task, target)
    native = NativeModel(pre, result.model, result.family, name, result.classes, contract, task)
    return native, result, test, target


@pytest.mark.parametrize("name, task", CASES, ids=[f"{n}-{t.value}" for n, t in CASES])
def test_fits_converts_and_matches_its_onnx_graph(name, task, tables, train_params):
    native, result, test, target = _fit(name, task, tables, train_params)
    assert result.task is task and result.estimator == name
    assert {"step", "val_loss", "val_score"} <= set(result.history.columns)

    output = native.predict_output(test)
    if task.is_regression:
        assert output.shape == (len(test),)
        assert np.corrcoef(output, test[target])[0, 1] > 0.3  # it learned something
    else:
        assert output.shape == (len(test), len(native.classes))
        np.testing.assert_allclose(output.sum(axis=1), 1.0, atol=1e-5)
        accuracy = (native.predict(test) == test[target].astype(str).to_numpy()).mean()
        assert accuracy >= 0.85

    model = onnx_export.to_onnx(native, 17)
    expected_inputs = onnx_input_names(native.contract.feature_names)
    assert [i.name for i in model.graph.input] == expected_inputs
    outputs = [o.name for o in model.graph.output]
    assert outputs == ([PREDICTION] if task.is_regression else [LABEL, PROBABILITIES])

    session = onnx_export.onnx_session(model)
    runtime = onnx_export.onnx_output(session, test, native.contract, task)
    error = parity_error(task, output, runtime).max()
    assert error <= get_estimator(name).parity_tolerance(task), error
    if task.is_classification:
        labels, _ = onnx_export.run_onnx(session, test, native.contract)
        assert (labels == native.predict(test).astype(str)).all()
    else:
        (raw,) = session.run(None, onnx_export.onnx_feeds(test, native.contract))
        assert raw.shape == (len(test), 1) and raw.dtype == np.float32


@pytest.mark.parametrize("name", ["lightgbm", "xgboost", "keras_mlp"])
def test_saved_and_loaded_model_predicts_the_same(name, tables, train_params, tmp_path):
    native, _, test, _ = _fit(name, Task.REGRESSION, tables, train_params)
    save_native_model(native, tmp_path)
    import joblib

    joblib.dump(native.preprocessor, tmp_path / "pre.joblib")
    loaded = load_native_model(tmp_path, tmp_path / "pre.joblib", native.contract)
    assert (loaded.estimator_name, loaded.task, loaded.family) == (
        name,
        Task.REGRESSION,
        native.family,
    )
    np.testing.assert_allclose(loaded.predict_output(test), native.predict_output(test), rtol=1e-6)


def test_unknown_estimator_lists_the_known_ones():
    with pytest.raises(PipelineError) as info:
        get_estimator("gradient_boosting")
    message = str(info.value)
    assert "train.estimator is 'gradient_boosting'" in message
    for name in ESTIMATORS:
        assert name in message


def test_unknown_estimator_in_params_is_refused_at_load(tmp_path):
    text = (REPO_ROOT / "params.yaml").read_text().replace("estimator: keras_mlp", "estimator: svm")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match="train.estimator is 'svm'; expected one of"):
        load_params(path)


def test_xgboost_classification_objective_as_regressor_is_refused(train_params):
    params = train_params.with_block("xgboost", objective="binary:logistic")
    reason = get_estimator("xgboost").refuse(params.xgboost, Task.REGRESSION)
    assert "binary:logistic" in reason and "refused" in reason
    x = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.raises(PipelineError, match="converts an XGBRegressor"):
        train_model("xgboost", params, x, x[:, 0], x, x[:, 0], Task.REGRESSION)
    # The same objective for a binary task is the library's default, and fine.
    assert get_estimator("xgboost").refuse(params.xgboost, Task.BINARY) is None


def test_a_task_the_estimator_does_not_support_names_the_alternatives(train_params):
    x = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.raises(PipelineError) as info:
        train_model("logistic_regression", train_params, x, x[:, 0], x, x[:, 0], Task.REGRESSION)
    assert "does not support a regression task" in str(info.value)
    assert "ridge" in str(info.value)
    with pytest.raises(PipelineError, match="'ridge' does not support a binary task"):
        train_model("ridge", train_params, x, np.array(["a", "b"] * 20), x, x[:, 0], Task.BINARY)


def test_parity_tolerances_per_task():
    for name, estimator in ESTIMATORS.items():
        for task in estimator.tasks:
            tolerance = estimator.parity_tolerance(task)
            if task.is_classification:
                assert tolerance == 1e-5, name
            else:
                assert 0 < tolerance <= 1e-4, name
    # Regression errors are relative to max(1, |y|): 1e-3 off 1000 is 1e-6.
    assert parity_error(Task.REGRESSION, np.array([1000.0]), np.array([1000.001]))[0] == (
        pytest.approx(1e-6)
    )
    assert np.isinf(parity_error(Task.BINARY, np.ones((2, 2)), np.ones((3, 2)))).all()


def test_awkward_column_names_reach_the_graph_and_the_feed(train_params):
    """Spaces, slashes, dots, non-ASCII letters, a leading digit, two names that sanitise alike."""
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "mean radius": rng.normal(size=n),
            "od280/od315_of_diluted_wines": rng.normal(size=n),
            "bill.depth.mm": rng.normal(size=n),
            "île": rng.choice(["Biscoe", "Dream"], size=n),
            "1st": rng.normal(size=n),
            "mean_radius": rng.normal(size=n),
        }
    )
    frame["y"] = np.where(frame["mean radius"] + frame["1st"] > 0, "yes", "no")
    contract = bundled.contract_for(frame, "y")
    names = onnx_input_names(contract.feature_names)
    assert names == [
        "mean_radius",
        "od280_od315_of_diluted_wines",
        "bill_depth_mm",
        "_le",
        "f_1st",
        "mean_radius_2",
    ]
    pre = fit_preprocessor(frame, contract)
    x = pre.transform(to_model_frame(frame, contract))
    y = frame["y"].to_numpy(str)
    for name in ("logistic_regression", "random_forest"):
        result = train_model(name, train_params, x, y, x, y, Task.BINARY)
        native = NativeModel(pre, result.model, result.family, name, result.classes, contract)
        session = onnx_export.onnx_session(onnx_export.to_onnx(native, 17))
        assert [i.name for i in session.get_inputs()] == names
        runtime = onnx_export.onnx_output(session, frame, contract, Task.BINARY)
        assert parity_error(Task.BINARY, native.predict_output(frame), runtime).max() <= 1e-5


def test_onnx_bytes_are_reproducible(tables, train_params):
    """Two identical trainings give the same model.onnx, byte for byte (Keras included)."""
    for name in ("keras_mlp", "lightgbm"):
        first, _, _, _ = _fit(name, Task.BINARY, tables, train_params)
        second, _, _, _ = _fit(name, Task.BINARY, tables, train_params)
        a = onnx_export.to_onnx(first, 17).SerializeToString()
        b = onnx_export.to_onnx(second, 17).SerializeToString()
        assert a == b, name


def test_one_class_target_is_one_paragraph(train_params):
    x = np.zeros((10, 2))
    with pytest.raises(PipelineError) as info:
        train_model(
            "random_forest", train_params, x, np.array(["a"] * 10), x, x[:, 0], Task.BINARY, "label"
        )
    message = str(info.value)
    assert "target 'label' holds only 'a'" in message
    assert "needs at least two classes" in message and "\n" not in message


def test_replace_on_train_params_changes_a_block(train_params):
    changed = replace(train_params, ridge=replace(train_params.ridge, alpha=3.0))
    assert changed.ridge.alpha == 3.0 and train_params.ridge.alpha == 1.0
    assert changed.keras_mlp == train_params.keras_mlp
