"""CI-definition fixtures: the real workflows, Jenkinsfile and Makefile, and copies to break."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ci.structure import (
    Makefile,
    load_jenkinsfile,
    load_workflow,
    read_makefile,
    without_make_state,
)
from tests.conftest import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
CI_WORKFLOW = WORKFLOWS / "ci.yml"
PROMOTE_WORKFLOW = WORKFLOWS / "promote.yml"
JENKINSFILE = REPO_ROOT / "Jenkinsfile"
LOCAL_ACTIONS = sorted((REPO_ROOT / ".github" / "actions").glob("*/action.yml"))
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
VENV_BIN = REPO_ROOT / ".venv" / "bin"


def run_tool(
    *args: str | Path, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a linter or script and capture its output as text.

    The environment is this process's (or ``env``) without what a calling `make` leaves in it
    (``make test`` runs these tests), so a `make` started here behaves as from a shell.
    """
    env = without_make_state(os.environ if env is None else env)
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="session")
def makefile() -> Makefile:
    """The real Makefile's targets and variables, from `make -pRrq`."""
    return read_makefile(REPO_ROOT)


@pytest.fixture(scope="session")
def called_targets() -> Makefile:
    """A stand-in Makefile defining exactly what the CI files call, so the tests that break a
    copy of a CI file see only the problem they introduce, whatever the shared Makefile holds
    at the moment."""
    targets = set(load_jenkinsfile(JENKINSFILE).targets())
    for path in WORKFLOW_FILES:
        targets |= set(load_workflow(path).targets())
    return Makefile(frozenset(targets), {})


@pytest.fixture
def ci_yaml() -> dict:
    """ci.yml as data, to edit and write back with :func:`write_yaml`."""
    return yaml.safe_load(CI_WORKFLOW.read_text())


@pytest.fixture
def promote_yaml() -> dict:
    return yaml.safe_load(PROMOTE_WORKFLOW.read_text())


@pytest.fixture
def write_yaml(tmp_path):
    """Write edited workflow data to a temporary file named like the original."""

    def write(data: dict, name: str = "ci.yml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def jenkins_copy(tmp_path):
    """Write an edited Jenkinsfile text to a temporary file named Jenkinsfile."""

    def write(text: str) -> Path:
        path = tmp_path / "Jenkinsfile"
        path.write_text(text)
        return path

    return write


class FakeBin:
    """A directory of stand-in executables that append their name and arguments to a log."""

    def __init__(self, root: Path):
        self.dir = root / "bin"
        self.dir.mkdir()
        self.log = root / "calls.log"

    def add(self, name: str, body: str = "") -> Path:
        """An executable ``name`` that logs its call, then runs ``body`` (bash)."""
        path = self.dir / name
        path.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{self.log}"\n{body}\n')
        path.chmod(0o755)
        return path

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def fake_bin(tmp_path) -> FakeBin:
    return FakeBin(tmp_path)
