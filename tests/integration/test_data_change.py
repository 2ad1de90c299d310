"""A changed data file is seen: the real ``dvc repro`` reruns from ``ingest`` when the bytes
behind ``data.source`` change, and skips everything after ``ingest`` when they do not."""

from __future__ import annotations

import re

import pytest
from palmerpenguins import load_penguins

from pipeline.io import file_sha256
from tests.integration.conftest import Project

pytestmark = pytest.mark.integration

RAW = "data/raw/dataset.parquet"


def _ran(proc) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", proc.stdout)


def _skipped(proc) -> list[str]:
    return re.findall(r"Stage '(\w+)' didn't change, skipping", proc.stdout)


def test_a_changed_local_file_reruns_from_ingest_and_an_unchanged_one_does_not(
    project: Project,
):
    source = project.root / "data" / "mine.csv"
    load_penguins().to_csv(source, index=False)
    project.set_params(**{"data.source": "data/mine.csv"})
    project.commit("use a local file")

    first = project.dvc("repro", "preprocess")
    assert _ran(first) == ["ingest", "validate", "preprocess"]
    before = file_sha256(project.root / RAW)

    # Not touched since: ingest knows it from its stamp without reading the file.
    same = project.dvc("repro", "preprocess")
    assert _ran(same) == ["ingest"]
    assert _skipped(same) == ["validate", "preprocess"]
    assert "data/mine.csv is unchanged (as in the last run)" in same.stdout
    assert file_sha256(project.root / RAW) == before

    # Written again with the same bytes: ingest reads it, finds the table unchanged and
    # leaves its output as it was, so nothing downstream reruns.
    load_penguins().to_csv(source, index=False)
    rewritten = project.dvc("repro", "preprocess")
    assert _ran(rewritten) == ["ingest"]
    assert (
        "the table is unchanged: data/mine.csv holds what data/raw/dataset.parquet already has "
        "(344 rows x 8 columns)"
    ) in rewritten.stdout
    assert file_sha256(project.root / RAW) == before

    # Overwrite the file in place (same name, same params): everything downstream reruns.
    load_penguins().head(300).to_csv(source, index=False)
    changed = project.dvc("repro", "preprocess")
    assert _ran(changed) == ["ingest", "validate", "preprocess"]
    assert "ingest: 300 rows x 8 columns" in changed.stdout
    assert project.read_json("reports/validation/result.json")["rows"] == 300
    status = project.dvc("status").stdout
    assert "train" in status  # the model trained on the old table is now out of date
