"""Bad input stops the real pipeline early with one clear paragraph and no traceback.

Each case puts a broken dataset behind ``data.source`` in a project copy and runs
``dvc repro``; the pipeline must fail at ingest or validate, name the problem, and leave
nothing downstream behind.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

pytestmark = pytest.mark.integration


def _penguins() -> pd.DataFrame:
    return load_penguins()


def _wrong_type(frame):
    frame = frame.astype({"body_mass_g": object})
    frame.loc[:9, "body_mass_g"] = "heavy"
    return frame


def _out_of_range(frame):
    frame.loc[:4, "flipper_length_mm"] = 999.0
    return frame


def _unknown_category(frame):
    frame.loc[: len(frame) // 10, "island"] = "Atlantis"
    return frame


def _rare_class(frame):
    chinstrap = frame.index[frame["species"] == "Chinstrap"]
    return frame.drop(chinstrap[4:])


CASES = {
    # name: (how to make the file, stage that stops, words the message must hold)
    "missing source file": (None, "ingest", [r"data.source 'data/missing.csv' does not exist"]),
    "unreadable file": (
        lambda path: path.write_bytes(b"\x00\x01 definitely not parquet"),
        "ingest",
        [r"could not be read as Parquet"],
    ),
    "missing target column": (
        lambda frame: frame.drop(columns=["species"]),
        "validate",
        [r"column 'species' is missing"],
    ),
    "column of the wrong type": (
        _wrong_type,
        "validate",
        [r"column 'body_mass_g': expected numeric"],
    ),
    "out-of-range values": (
        _out_of_range,
        "validate",
        [r"column 'flipper_length_mm': 5 values \(1\.5%\) outside \[160\.0, 240\.0\]"],
    ),
    "unknown category beyond tolerance": (
        _unknown_category,
        "validate",
        [
            r"column 'island': \d+ values \(\d+\.\d%\) not in \[Biscoe, Dream, Torgersen\]",
            "Atlantis",
        ],
    ),
    "too few rows": (
        lambda frame: frame.sample(40, random_state=0),
        "validate",
        [r"table has 40 rows, fewer than the minimum 100"],
    ),
    "entirely empty column": (
        lambda frame: frame.assign(flipper_length_mm=np.nan),
        "validate",
        [r"column 'flipper_length_mm' is entirely empty \(every value is missing\)"],
    ),
    "one-class target": (
        lambda frame: frame[frame["species"] == "Adelie"],
        "validate",
        [r"column 'species': the target has 1 class \('Adelie'\); a classifier needs"],
    ),
    "too few rows per class for the split": (
        _rare_class,
        "validate",
        [r"class\(es\) 'Chinstrap' \(4\) have fewer than 5 distinct rows"],
    ),
    "every row duplicated ten times": (
        lambda frame: pd.concat([frame] * 10, ignore_index=True),
        "validate",
        [r"3096 rows \(90\.0%\) are exact copies of an earlier row, more than max_duplicates"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_stops_the_pipeline_with_a_clear_error(case, project):
    make, stage, patterns = CASES[case]
    if make is None:
        source = "data/missing.csv"
    elif case == "unreadable file":
        source = "data/broken.parquet"
        make(project.root / source)
    else:
        source = "data/bad.csv"
        make(_penguins()).to_csv(project.root / source, index=False)
    project.set_params(**{"data.source": source})

    proc = project.dvc("repro", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{stage} failed:" in output
    for pattern in patterns:
        assert re.search(pattern, output), (pattern, output[-2000:])
    assert "Traceback" not in output
    assert not (project.root / "data" / "processed").exists()
    assert not (project.root / "models").exists()
    if stage == "validate":
        result = project.read_json("reports/validation/result.json")
        assert result["success"] is False


def test_nan_stays_missing_not_a_category(project):
    """A CSV's empty cells are missing values, and within tolerance they pass."""
    frame = _penguins()
    frame.loc[:1, "sex"] = np.nan
    frame.to_csv(project.root / "data" / "ok.csv", index=False)
    project.set_params(**{"data.source": "data/ok.csv"})
    project.dvc("repro", "validate")
    assert project.read_json("reports/validation/result.json")["success"] is True
