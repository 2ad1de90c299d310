from dataclasses import replace

import numpy as np
import pytest

from model_spec.task import Task
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.model import NativeModel
from pipeline.stages.preprocess import fit_preprocessor, split_data, to_model_frame
from pipeline.stages.train import train_model
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def data():
    from palmerpenguins import load_penguins

    from pipeline.contract import load_contract

    contract = load_contract(REPO_ROOT / "data" / "contract.yaml")
    splits = split_data(load_penguins(), "species", 42, 0.2, 0.2)
    pre = fit_preprocessor(splits.train, contract)

    def xy(frame):
        return pre.transform(to_model_frame(frame, contract)), frame["species"].to_numpy(str)

    return contract, pre, splits, xy(splits.train), xy(splits.val)


@pytest.fixture(scope="module")
def train_params():
    params = load_params(REPO_ROOT / "params.yaml").train
    # A short Keras budget keeps unit tests fast; the pipeline uses params.yaml as is.
    return replace(params, keras_mlp=replace(params.keras_mlp, epochs=30, patience=5))


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest", "keras_mlp"])
def test_each_estimator_learns_penguins(estimator, data, train_params):
    contract, pre, splits, (x_tr, y_tr), (x_va, y_va) = data
    result = train_model(estimator, train_params, x_tr, y_tr, x_va, y_va)
    assert result.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert result.val_metrics["val_accuracy"] >= 0.9
    assert {"step", "val_accuracy", "val_log_loss", "val_loss", "val_score"} <= set(
        result.history.columns
    )
    assert result.task is Task.MULTICLASS
    assert len(result.history) >= 2  # per-epoch / per-step metrics exist

    native = NativeModel(pre, result.model, result.family, estimator, result.classes, contract)
    proba = native.predict_proba(splits.test)
    assert proba.shape == (len(splits.test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    accuracy = (native.predict(splits.test) == splits.test["species"].to_numpy(str)).mean()
    assert accuracy >= 0.9


@pytest.mark.parametrize("estimator", ["random_forest", "lightgbm", "xgboost", "keras_mlp"])
def test_training_is_deterministic(estimator, data, train_params):
    _, _, _, (x_tr, y_tr), (x_va, y_va) = data
    first = train_model(estimator, train_params, x_tr, y_tr, x_va, y_va)
    second = train_model(estimator, train_params, x_tr, y_tr, x_va, y_va)
    assert first.val_metrics == second.val_metrics
    assert first.history.equals(second.history)


def test_keras_early_stopping_restores_best_epoch(data, train_params):
    _, _, _, (x_tr, y_tr), (x_va, y_va) = data
    result = train_model("keras_mlp", train_params, x_tr, y_tr, x_va, y_va)
    best = result.val_metrics["best_epoch"]
    assert result.val_metrics["val_log_loss"] == pytest.approx(result.history["val_log_loss"].min())
    assert len(result.history) <= best + 1 + train_params.keras_mlp.patience


def test_the_contract_decides_the_task(data, train_params):
    contract, pre, splits, (x_tr, y_tr), (x_va, y_va) = data
    native = NativeModel(pre, None, "sklearn", "logistic_regression", ["a", "b", "c"], contract)
    assert native.task is contract.task is Task.MULTICLASS


def test_one_class_target_is_a_paragraph_not_a_traceback(data, train_params):
    _, _, _, (x_tr, _), (x_va, y_va) = data
    for estimator in ("logistic_regression", "keras_mlp"):
        with pytest.raises(PipelineError, match="holds only 'Adelie'.*at least two classes"):
            train_model(estimator, train_params, x_tr, np.array(["Adelie"] * len(x_tr)), x_va, y_va)


def test_keras_prints_no_progress_bar_after_training(data, train_params, capsys):
    # MLflow's log_model checks its input example with model.predict; a progress bar there
    # landed in the train stage's output (clear_session had reset Keras's quiet mode).
    _, _, _, (x_tr, y_tr), (x_va, y_va) = data
    result = train_model("keras_mlp", train_params, x_tr, y_tr, x_va, y_va)
    capsys.readouterr()
    result.model.predict(x_va.astype("float32"))
    out = capsys.readouterr()
    assert "step" not in out.out + out.err
    assert "\x1b[" not in out.out + out.err


def test_a_diverging_keras_network_is_a_paragraph_not_a_traceback(data, train_params):
    # Features of 1e30 after scaling stand for what a value beyond float32 did: the loss is NaN
    # from the first epoch, and picking the best epoch died on "Encountered all NA values".
    _, _, _, (x_tr, y_tr), (x_va, y_va) = data
    params = replace(train_params, keras_mlp=replace(train_params.keras_mlp, epochs=3))
    huge = np.full_like(x_tr, 1e30)
    with pytest.raises(PipelineError, match=r"keras_mlp did not train: .* every one of \d epoch"):
        train_model("keras_mlp", params, huge, y_tr, np.full_like(x_va, 1e30), y_va)
