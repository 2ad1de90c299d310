"""Settings that cannot work are refused up front, naming the variable; model files are found."""

from __future__ import annotations

import shutil

import pytest

from serving.config import ConfigError, ServingConfig
from serving.model import ModelError, locate_model_files


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SERVING_API_TOKEN": "a", "SERVING_API_TOKEN_FILE": "/x"},
            "set SERVING_API_TOKEN or SERVING_API_TOKEN_FILE, not both.",
        ),
        (
            {"SERVING_API_TOKEN_FILE": "/nonexistent/token"},
            "SERVING_API_TOKEN_FILE '/nonexistent/token': No such file or directory.",
        ),
        (
            {"SERVING_UNKNOWN_CATEGORIES": "maybe"},
            "SERVING_UNKNOWN_CATEGORIES must be 'reject' or 'accept', not 'maybe'.",
        ),
        (
            {"SERVING_OUT_OF_RANGE": "clip"},
            "SERVING_OUT_OF_RANGE must be 'reject' or 'accept', not 'clip'.",
        ),
        ({"SERVING_MAX_ROWS": "many"}, "SERVING_MAX_ROWS must be a number, not 'many'."),
        ({"SERVING_MAX_ROWS": "0"}, "SERVING_MAX_ROWS must be at least 1, not 0."),
        (
            {"SERVING_MODEL_URI": "runs:/abc/model"},
            "SERVING_MODEL_URI must look like models:/<name>@<alias> or models:/<name>/<version>, "
            "not 'runs:/abc/model'.",
        ),
        (
            {"SERVING_MODEL_URI": "models:/penguins-classifier"},
            "SERVING_MODEL_URI must look like models:/<name>@<alias> or models:/<name>/<version>, "
            "not 'models:/penguins-classifier'.",
        ),
        (
            {
                "SERVING_MODEL_URI": "models:/m@champion",
                "SERVING_ROLLOUT": "canary",
                "SERVING_CHALLENGER_URI": "m@challenger",
            },
            "SERVING_CHALLENGER_URI must look like models:/<name>@<alias> or "
            "models:/<name>/<version>, not 'm@challenger'.",
        ),
        (
            {"SERVING_MODEL_DIR": ""},
            "set SERVING_MODEL_DIR or SERVING_MODEL_URI: there is no model.",
        ),
        (
            {"SERVING_RELOAD_INTERVAL": "-1"},
            "SERVING_RELOAD_INTERVAL must be 0 (off) or a number of seconds.",
        ),
        (
            {"SERVING_PREDICTION_LOG_RATE_LIMIT": "-5"},
            "SERVING_PREDICTION_LOG_RATE_LIMIT must be rows per second per worker, 0 for no "
            "limit, not -5.0.",
        ),
    ],
)
def test_bad_settings_are_refused(env, message):
    with pytest.raises(ConfigError) as error:
        ServingConfig.from_env(env)
    assert str(error.value) == message


@pytest.mark.parametrize("token", ["t\u00f6ken", " lead", "trail ", "tab\there", "nul\x00"])
def test_a_token_no_header_can_carry_is_refused(token, tmp_path):
    # granian hands no non-ASCII header value on and the check strips spaces: such a token
    # started a server that refused every client.
    with pytest.raises(ConfigError, match="the API token must be printable ASCII") as raised:
        ServingConfig.from_env({"SERVING_API_TOKEN": token})
    assert token not in str(raised.value)
    (tmp_path / "token").write_text("t\u00f6ken\n")
    with pytest.raises(ConfigError, match="the API token must be printable ASCII"):
        ServingConfig.from_env({"SERVING_API_TOKEN_FILE": str(tmp_path / "token")})
    config = ServingConfig.from_env({"SERVING_API_TOKEN": "correct horse battery staple"})
    assert config.api_token == "correct horse battery staple"


def test_empty_token_file_is_refused(tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    with pytest.raises(ConfigError, match=r"SERVING_API_TOKEN_FILE '.*token' is empty\."):
        ServingConfig.from_env({"SERVING_API_TOKEN_FILE": str(token)})


def test_environment_is_read(tmp_path):
    config = ServingConfig.from_env(
        {
            "SERVING_MODEL_DIR": str(tmp_path),
            "SERVING_API_TOKEN": "t",
            "SERVING_MAX_ROWS": "7",
            "SERVING_UNKNOWN_CATEGORIES": "Accept",
            "SERVING_RELOAD_INTERVAL": "2.5",
        }
    )
    assert (config.model_dir, config.api_token, config.max_rows) == (tmp_path, "t", 7)
    assert config.unknown_categories == "accept"
    assert config.reload_interval == 2.5
    assert "api_token" not in repr(config)  # the token never reaches a log line via repr


def test_model_files_in_an_mlflow_onnx_layout(exported_model, tmp_path):
    root = tmp_path / "version"
    (root / "extra_files").mkdir(parents=True)
    shutil.copy(exported_model / "model.onnx", root)
    for name in ("model.json", "golden.json"):
        shutil.copy(exported_model / name, root / "extra_files")
    files = locate_model_files(root)
    assert files.onnx == root / "model.onnx"
    assert files.descriptor == root / "extra_files" / "model.json"
    assert files.golden == root / "extra_files" / "golden.json"


def test_model_files_missing_are_named(exported_model, tmp_path):
    root = tmp_path / "model"
    shutil.copytree(exported_model, root)
    (root / "golden.json").unlink()
    with pytest.raises(ModelError, match="no golden.json next to .*model.json.*cannot check"):
        locate_model_files(root)
    (root / "model.onnx").unlink()
    with pytest.raises(ModelError, match="names ONNX file 'model.onnx', which is not in"):
        locate_model_files(root)
    (root / "model.json").unlink()
    with pytest.raises(ModelError, match="no model.json under .*: a served model needs"):
        locate_model_files(root)
