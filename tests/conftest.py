"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import quiet_process

REPO_ROOT = Path(__file__).resolve().parents[1]

# The same quiet, reproducible TensorFlow and MLflow set-up a stage gets from its CLI wrapper.
quiet_process()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A fresh MLflow sqlite store in a temp dir, selected through MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
