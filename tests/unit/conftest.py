"""Unit-test fixtures: small in-memory frames and the project's real contract."""

from __future__ import annotations

import pandas as pd
import pytest
from palmerpenguins import load_penguins

from pipeline.contract import Contract, load_contract
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="session")
def contract() -> Contract:
    return load_contract(REPO_ROOT / "data" / "contract.yaml")


@pytest.fixture
def penguins() -> pd.DataFrame:
    """The real default dataset (344 rows), shipped inside the palmerpenguins package."""
    return load_penguins()


@pytest.fixture
def tiny(penguins) -> pd.DataFrame:
    """A dozen rows per species, including rows with missing values."""
    parts = [group.head(12) for _, group in penguins.groupby("species")]
    frame = pd.concat(parts + [penguins[penguins["sex"].isna()].head(2)])
    return frame.reset_index(drop=True)
