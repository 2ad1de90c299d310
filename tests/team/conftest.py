"""The team stack for real: PostgreSQL, the S3 server and the MLflow server, started once.

The stack lives in a directory under /tmp the ``postgres`` user can reach (PostgreSQL refuses
to run as root); everything binds 127.0.0.1 on free ports and is stopped, and its directory
deleted, when the session ends.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deploy.stack import ADMIN, Stack, _alive, _port_open
from tests.conftest import REPO_ROOT
from tests.integration.conftest import Project, make_project

VENV_BIN = Path(sys.executable).parent
#: What a clone needs besides the pipeline files: the Makefile and what its targets call.
CLONE_EXTRA = (
    "Makefile",
    "pyproject.toml",
    "uv.lock",
    ".github/scripts",
    "deploy/__init__.py",
    "deploy/run_cache.py",
)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="team-stack-", dir="/tmp"))
    root.chmod(0o755)
    stack = Stack(root)
    # one MLflow worker is plenty for the tests and halves the server's start-up work
    mp = pytest.MonkeyPatch()
    mp.setenv("TEAM_MLFLOW_WORKERS", "1")
    try:
        stack.up(prometheus=False)
        yield stack
    finally:
        pids = dict(stack.state().pids)
        ports = dict(stack.state().ports)
        stack.down(purge=True)
        mp.undo()
    left = [name for name, pid in pids.items() if _alive(pid)]
    assert not left, f"still running after down: {left}"
    assert not any(_port_open(ports[n]) for n in ("mlflow", "postgres", "s3")), ports
    assert not root.exists()


def add_user(stack: Stack, username: str, password: str) -> None:
    """A teammate's MLflow login, created by the admin through the auth API."""
    env = stack.client_env()
    response = requests.post(
        f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/users/create",
        json={"username": username, "password": password},
        auth=(ADMIN, env["MLFLOW_TRACKING_PASSWORD"]),
        timeout=60,
    )
    assert response.status_code == 200, response.text


class Clone(Project):
    """A teammate's clone of the project, its shell pointed at the team stack as ``user``."""

    def __init__(self, root: Path, stack: Stack, user: str, password: str) -> None:
        super().__init__(root)
        self.stack, self.user, self.password = stack, user, password

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(self.stack.client_env())
        env.update(
            MLFLOW_TRACKING_USERNAME=self.user,
            MLFLOW_TRACKING_PASSWORD=self.password,
            USER=self.user,
            MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        )
        for ci_user in ("GITHUB_ACTOR", "BUILD_USER_ID", "GITLAB_USER_LOGIN"):
            env.pop(ci_user, None)
        return env

    def make(self, *targets: str, timeout: float = 900, check: bool = True, **variables: str):
        """``make`` in the clone, on the project's own environment (nothing is reinstalled)."""
        venv = VENV_BIN.parent
        return self.run(
            "make",
            "--no-print-directory",
            "-o", f"{venv}/.installed",
            f"VENV={venv}",
            *targets,
            *(f"{k}={v}" for k, v in variables.items()),
            timeout=timeout,
            check=check,
        )  # fmt: skip


def new_clone(dest: Path, stack: Stack, user: str, password: str) -> Clone:
    """A fresh project repository (the pipeline files, the Makefile) as ``user``'s clone."""
    project = make_project(dest)
    for rel in CLONE_EXTRA:
        src = REPO_ROOT / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    project.commit("the Makefile")
    return Clone(dest, stack, user, password)


def git_clone(source: Clone, dest: Path, user: str, password: str) -> Clone:
    """A second teammate: ``git clone`` of the first one's repository."""
    subprocess.run(["git", "clone", "-q", str(source.root), str(dest)], check=True)
    clone = Clone(dest, source.stack, user, password)
    clone.run("git", "config", "user.email", f"{user}@example.invalid")
    clone.run("git", "config", "user.name", user)
    return clone
