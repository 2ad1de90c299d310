from pathlib import Path

import pytest
import yaml

from pipeline.config import family_of, flatten, load_params
from pipeline.errors import PipelineError
from tests.conftest import REPO_ROOT


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repo_params_load_into_frozen_dataclasses():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.source == "builtin:penguins"
    assert params.train.keras_mlp.hidden_units == tuple(params.train.keras_mlp.hidden_units)
    with pytest.raises(AttributeError):
        params.train.seed = 1  # frozen


def test_missing_key_is_named(tmp_path):
    path = _write(tmp_path, lambda raw: raw["train"].pop("seed"))
    with pytest.raises(PipelineError, match=r"'params.train' is missing key\(s\): seed"):
        load_params(path)


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, lambda raw: raw["preprocess"].update(shuffle=True))
    with pytest.raises(PipelineError, match=r"'params.preprocess' has unknown key\(s\): shuffle"):
        load_params(path)


def test_unknown_estimator_lists_the_choices(tmp_path):
    path = _write(tmp_path, lambda raw: raw["train"].update(estimator="svm"))
    with pytest.raises(PipelineError, match="'svm'; expected one of: logistic_regression"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")


def test_family_and_flatten():
    assert family_of("random_forest") == "sklearn"
    assert family_of("keras_mlp") == "keras"
    flat = flatten(load_params(REPO_ROOT / "params.yaml"))
    assert flat["train.keras_mlp.epochs"] == 200
    assert flat["gate.min.multiclass.f1_macro"] == 0.5
