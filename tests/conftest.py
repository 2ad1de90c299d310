"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
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


def _global_tracking_uri() -> str | None:
    """``mlflow.set_tracking_uri``'s process-wide value (None: unset, or MLflow not loaded)."""
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    return getattr(utils, "_tracking_uri", None)


def _set_global_tracking_uri(uri: str | None, variable: str | None) -> None:
    """Set ``mlflow.set_tracking_uri``'s value to ``uri`` and MLFLOW_TRACKING_URI to
    ``variable`` (set_tracking_uri also writes the variable, or unsets it for None)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if variable is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = variable


@pytest.fixture(autouse=True)
def _one_test_s_tracking_uri_is_not_the_next_one_s() -> Iterator[None]:
    """A test (or a stage it runs in-process) may call ``mlflow.set_tracking_uri``, which
    outranks MLFLOW_TRACKING_URI for the rest of the process: put it back after the test, so
    a store never becomes a later test's (``make test`` runs the files in several processes,
    in no fixed order)."""
    before, variable = _global_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if _global_tracking_uri() != before:
        _set_global_tracking_uri(before, variable)


def forget_tracking_uri() -> None:
    """Clear ``mlflow.set_tracking_uri``'s process-wide setting, keeping MLFLOW_TRACKING_URI."""
    if _global_tracking_uri() is not None:
        _set_global_tracking_uri(None, os.environ.get("MLFLOW_TRACKING_URI"))
