"""Run the real pipeline stages in-process in a temporary project, up to a gated export.

Registry and UI tests need several exported candidates in one MLflow store: a good model, a
deliberately worse one, an equal one. Running ``dvc repro`` for each costs minutes; calling the
stages' own ``main()`` in-process with the same arguments as ``dvc.yaml`` costs seconds and runs
the same code. Only ``dvc.lock`` (which ``register`` hashes) is written by hand: DVC does
not run here.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.conftest import Project, make_project, write_params

SPLITS = "data/processed"
TEST_SPLIT = "data/processed/test.parquet"
VALIDATION = "reports/validation/result.json"


@dataclass
class Candidate:
    """One pipeline execution's outputs, copied aside so later executions do not overwrite them."""

    root: Path
    run_id: str
    metrics: dict[str, float]

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    @property
    def parity_file(self) -> Path:
        return self.root / "parity.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "export"


def _ok(code: int | None, stage: str) -> None:
    assert code == 0, f"stage {stage} exited {code}"


class Chain:
    """A project copy whose stages run in this process (cwd switched to the copy)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = project.root

    @contextlib.contextmanager
    def here(self):
        with contextlib.chdir(self.root):
            yield

    def set_params(self, **dotted: Any) -> None:
        self.project.set_params(**dotted)

    def write_params(self, path: Path, **dotted: Any) -> Path:
        """A params file like the project's with some values changed (e.g. the model name)."""
        return write_params(self.root / "params.yaml", path, **dotted)

    def prepare(self) -> None:
        """ingest, validate, preprocess: the data every candidate shares."""
        from pipeline.stages import ingest, preprocess, validate

        with self.here():
            raw = ["--params", "params.yaml", "--out", "data/raw/dataset.parquet"]
            _ok(ingest.main(raw), "ingest")
            _ok(
                validate.main(
                    [
                        "--params", "params.yaml", "--data", "data/raw/dataset.parquet",
                        "--out", "reports/validation",
                    ]
                ),
                "validate",
            )  # fmt: skip
            _ok(
                preprocess.main(
                    [
                        "--params", "params.yaml", "--data", "data/raw/dataset.parquet",
                        "--validation", VALIDATION, "--out-dir", SPLITS,
                        "--preprocessor", "models/preprocess/preprocessor.joblib",
                    ]
                ),
                "preprocess",
            )  # fmt: skip
        # dvc.lock is what `register` hashes; the chain does not run DVC, so it stands in.
        (self.root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")

    def candidate(self, label: str, store: Path) -> Candidate:
        """train, evaluate, export with the current params; outputs copied to store/label."""
        from pipeline.stages import evaluate, train

        with self.here():
            _ok(
                train.main(
                    [
                        "--params", "params.yaml", "--splits", SPLITS,
                        "--preprocessor", "models/preprocess/preprocessor.joblib",
                        "--raw", "data/raw/dataset.parquet", "--out", "models/train",
                        "--history", "reports/train_history.csv",
                    ]
                ),
                "train",
            )  # fmt: skip
            _ok(
                evaluate.main(
                    [
                        "--params", "params.yaml", "--test", TEST_SPLIT,
                        "--train-dir", "models/train",
                        "--preprocessor", "models/preprocess/preprocessor.joblib",
                        "--metrics", "reports/metrics.json", "--plots", "reports/plots",
                        "--figures", "reports/figures",
                    ]
                ),
                "evaluate",
            )  # fmt: skip
            export_stage(self.root)
        dest = store / label
        dest.mkdir(parents=True)
        shutil.copy2(self.root / "reports/metrics.json", dest / "metrics.json")
        shutil.copy2(self.root / "reports/parity.json", dest / "parity.json")
        shutil.copytree(self.root / "models/export", dest / "export")
        run_id = json.loads((self.root / "models/train/run.json").read_text())["run_id"]
        metrics = json.loads((dest / "metrics.json").read_text())
        return Candidate(dest, run_id, metrics)

    def gate(self, candidate: Candidate, params: Path, out_dir: Path) -> tuple[int, Path, Path]:
        """The real gate stage on a candidate; returns (exit code, gate.json, gate.md)."""
        from pipeline.stages import gate

        out, report = out_dir / "gate.json", out_dir / "gate.md"
        with self.here():
            code = gate.main(
                [
                    "--params", str(params), "--metrics", str(candidate.metrics_file),
                    "--parity", str(candidate.parity_file), "--validation", VALIDATION,
                    "--model-dir", str(candidate.model_dir), "--test", TEST_SPLIT,
                    "--out", str(out), "--report", str(report),
                ]
            )  # fmt: skip
        return code, out, report

    def registry(self, *args: str) -> int:
        from pipeline import registry

        with self.here():
            return registry.main(list(args))


def new_chain(dest: Path) -> Chain:
    return Chain(make_project(dest))


def export_stage(root: Path) -> None:
    """The real export stage (ONNX graph, descriptor, golden rows, parity, MLflow model)."""
    from pipeline.stages import export

    with contextlib.chdir(root):
        _ok(
            export.main(
                [
                    "--params", "params.yaml", "--train-dir", "models/train",
                    "--preprocessor", "models/preprocess/preprocessor.joblib",
                    "--test", TEST_SPLIT, "--raw", "data/raw/dataset.parquet",
                    "--metrics", "reports/metrics.json", "--out", "models/export",
                    "--parity", "reports/parity.json",
                ]
            ),
            "export",
        )  # fmt: skip
