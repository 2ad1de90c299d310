"""Real tables that ship inside packages, through ``infer-contract`` and the real ``dvc repro``
up to ``preprocess``: binary, multiclass and regression targets, and a poisoned penguins copy.

Each case writes the table as CSV into a project copy, drafts its contract with the CLI the
README names (``python -m pipeline.stages.validate infer``), and runs ``dvc repro preprocess``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from sklearn import datasets

from pipeline.contract import load_contract
from tests.integration.conftest import Project

pytestmark = pytest.mark.integration


def _sklearn(name: str) -> pd.DataFrame:
    return getattr(datasets, f"load_{name}")(as_frame=True).frame


def _label_in_range() -> pd.DataFrame:
    frame = load_penguins()
    code = frame["species"].map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2})
    noise = np.random.default_rng(1).uniform(0.0, 2.0, len(frame))
    return frame.assign(bill_depth_mm=12.0 + 4.0 * code + noise)


TABLES = {
    # name: (table, target, task, leakage suspects expected)
    "breast_cancer": (lambda: _sklearn("breast_cancer"), "target", "binary", []),
    "iris": (lambda: _sklearn("iris"), "target", "multiclass", []),
    "wine": (lambda: _sklearn("wine"), "target", "multiclass", []),
    "diabetes": (lambda: _sklearn("diabetes"), "target", "regression", []),
    "penguins body mass": (load_penguins, "body_mass_g", "regression", []),
    "penguins with a label-encoding feature": (
        _label_in_range,
        "species",
        "multiclass",
        ["bill_depth_mm"],
    ),
}


def _draft(project: Project, frame: pd.DataFrame, target: str):
    frame.to_csv(project.root / "data" / "table.csv", index=False)
    project.set_params(**{"data.source": "data/table.csv"})
    return project.python(
        "-m", "pipeline.stages.validate", "infer", "--params", "params.yaml", "--target", target,
        "--out", "data/contract.yaml", "--force",
    )  # fmt: skip


@pytest.mark.parametrize("name", list(TABLES))
def test_a_real_table_drafts_validates_and_splits(name, project: Project):
    make, target, task, suspects = TABLES[name]
    frame = make()
    drafted = _draft(project, frame, target)
    assert f"drafted a {task} contract" in drafted.stdout
    assert load_contract(project.root / "data" / "contract.yaml").task.value == task

    proc = project.dvc("repro", "preprocess")
    assert "Traceback" not in proc.stdout + proc.stderr
    result = project.read_json("reports/validation/result.json")
    assert result["success"] is True
    assert result["rows"] == len(frame)
    assert [s["column"] for s in result["leakage"]["suspects"]] == suspects
    assert result["duplicates"]["max"] == 0.05
    sizes = [len(pd.read_parquet(project.root / f"data/processed/{n}.parquet")) for n in
             ("train", "val", "test")]  # fmt: skip
    assert sum(sizes) == frame[target].notna().sum()


def test_an_all_empty_column_is_flagged_by_infer_and_refused_by_validate(project: Project):
    frame = load_penguins().assign(bill_length_mm=np.nan)
    drafted = _draft(project, frame, "species")
    assert "  bill_length_mm: entirely empty in this sample: ignored" in drafted.stdout
    spec = load_contract(project.root / "data" / "contract.yaml").column("bill_length_mm")
    assert spec.role == "ignored"
    project.run("git", "checkout", "data/contract.yaml")  # the reviewed penguins contract
    proc = project.dvc("repro", "preprocess", check=False)
    assert proc.returncode != 0
    assert "column 'bill_length_mm' is entirely empty" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (project.root / "data" / "processed").exists()


def test_a_one_class_table_is_refused_by_infer(project: Project):
    frame = load_penguins().query("species == 'Adelie'")
    frame.to_csv(project.root / "data" / "table.csv", index=False)
    project.set_params(**{"data.source": "data/table.csv"})
    proc = project.python(
        "-m", "pipeline.stages.validate", "infer", "--params", "params.yaml", "--target", "species",
        "--out", "data/draft.yaml", check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        "validate failed: target column 'species' has a single value ('Adelie')"
    )
    assert not (project.root / "data" / "draft.yaml").exists()


def test_make_infer_contract_takes_a_target_name_with_spaces(project: Project):
    """``--target $(TARGET)`` split "penguin species" into two arguments (argparse:
    "unrecognized arguments: species"); the README says a column name may hold anything."""
    import shutil
    import sys
    from pathlib import Path

    shutil.copy2(Path(__file__).parents[2] / "Makefile", project.root / "Makefile")
    frame = load_penguins().rename(columns={"species": "penguin species"})
    frame.to_csv(project.root / "data" / "table.csv", index=False)
    project.set_params(**{"data.source": "data/table.csv"})
    made = project.run(
        "make", "-o", "env", "infer-contract", f"BIN={Path(sys.executable).parent}",
        "TARGET=penguin species", "OUT=data/drafted 'it'.yaml", "FORCE=1",
    )  # fmt: skip
    assert "drafted a multiclass contract" in made.stdout
    drafted = load_contract(project.root / "data" / "drafted 'it'.yaml")
    assert drafted.target == "penguin species"
