"""MLflow wiring: where the store is, and one run per pipeline execution.

``train`` opens the run and writes its id to a small JSON file that later stages declare as a
dependency; ``evaluate``, ``export`` and ``gate`` reopen the same run from that file.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.io import read_json, write_json

LOCAL_STORE = Path("mlruns")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set and not empty, else the embedded store under ``./mlruns``.

    An empty value counts as unset: CI systems pass an unset secret as an empty string.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(LOCAL_STORE / 'mlflow.db').resolve()}"


def _is_local_store(uri: str) -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI") and uri.startswith("sqlite:///")


def configure(experiment: str) -> str:
    """Point MLflow at the store and return the experiment id, creating it if needed."""
    import mlflow

    uri = tracking_uri()
    # Decide before set_tracking_uri(), which also exports MLFLOW_TRACKING_URI.
    local = _is_local_store(uri)
    if local:
        LOCAL_STORE.mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = (LOCAL_STORE / "artifacts").resolve().as_uri() if local else None
    return client.create_experiment(experiment, artifact_location=location)


def git_commit() -> str:
    """The checked-out commit (``-dirty`` if tracked files differ); ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def write_run_file(path: str | Path, run_id: str, experiment_id: str, **extra: str) -> None:
    write_json(path, {"run_id": run_id, "experiment_id": experiment_id, **extra})


def read_run_id(path: str | Path) -> str:
    try:
        return read_json(path)["run_id"]
    except FileNotFoundError:
        raise PipelineError(f"run file '{path}' is missing: run the train stage first.") from None


@contextmanager
def resume_run(run_file: str | Path, experiment: str) -> Iterator[object]:
    """Reopen the pipeline's MLflow run recorded in ``run_file``."""
    import mlflow

    configure(experiment)
    run_id = read_run_id(run_file)
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise PipelineError(
            f"MLflow run {run_id} (from '{run_file}') is not in the store at {tracking_uri()}; "
            "retrain with `make retrain` for a run in this one (DVC's run cache can restore a "
            "train stage run against another MLflow store)."
        ) from None
    with mlflow.start_run(run_id=run_id) as run:
        yield run


#: The splits ``preprocess`` writes, and the MLflow dataset context each is logged with.
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


def log_split_datasets(splits_dir: str | Path, target: str, name: str) -> list[object]:
    """Log the train, validation and test tables as MLflow datasets of the active run.

    Each is ``mlflow.data.from_pandas`` of the split's Parquet file (its source, so the UI links
    the file; a digest of its content; its schema and row count) with ``targets`` set, logged
    with ``mlflow.log_input`` and the context ``training``, ``validation`` or ``testing``:
    the run's *Datasets* section then shows what the model was trained and tested on. The
    dataset names are ``<name>-train``, ``<name>-val``, ``<name>-test``. Returns the datasets.
    """
    import warnings

    import mlflow

    from pipeline.io import read_table

    logged = []
    for split, context in SPLIT_CONTEXTS.items():
        path = Path(splits_dir) / f"{split}.parquet"
        if not path.is_file():
            raise PipelineError(f"split '{path}' is missing: run the preprocess stage first.")
        frame = read_table(path)
        with warnings.catch_warnings():
            # A local path matches two equivalent source classes; MLflow warns and picks one.
            warnings.filterwarnings("ignore", message="The specified dataset source")
            # An integer column (penguins' year) only makes MLflow hint about missing values.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            dataset = mlflow.data.from_pandas(
                frame,
                source=str(path.resolve()),
                targets=target if target in frame.columns else None,
                name=f"{name}-{split}",
            )
            mlflow.log_input(dataset, context=context)  # infers the schema (again) here
        logged.append(dataset)
    return logged
