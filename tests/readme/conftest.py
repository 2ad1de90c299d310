"""README-test fixtures: the README's text and a fresh clone to run it in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.readme.readme import clone_working_tree


@pytest.fixture(scope="session")
def readme_text() -> str:
    return (REPO_ROOT / "README.md").read_text()


@pytest.fixture
def fresh_clone(tmp_path) -> tuple[Path, Path]:
    """(clone, home): a clone of the working tree and an empty HOME for the new user."""
    home = tmp_path / "home"
    home.mkdir()
    return clone_working_tree(REPO_ROOT, tmp_path / "clone"), home
