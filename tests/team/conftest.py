"""The team stack for real: PostgreSQL, the S3 server and the MLflow server, started once.

The stack lives in a directory under /tmp the ``postgres`` user can reach (PostgreSQL refuses
to run as root); everything binds 127.0.0.1 on free ports and is stopped, and its directory
deleted, when the session ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deploy.stack import ADMIN, Stack, _alive, _port_open
from pipeline.ports import free_port
from tests.conftest import REPO_ROOT
from tests.integration.conftest import Project, make_project
from tests.readme.readme import bash_blocks, fresh_shell_env

VENV_BIN = Path(sys.executable).parent
#: What a clone needs besides the pipeline files: the Makefile and what its targets call.
CLONE_EXTRA = (
    "Makefile",
    "pyproject.toml",
    "uv.lock",
    ".github/scripts",
    "deploy/__init__.py",
    "deploy/run_cache.py",
    "deploy/stack.py",
)


def readme_commands(first: str) -> list[str]:
    """The commands of the README's ```bash block whose first command starts with ``first``."""
    for block in bash_blocks((REPO_ROOT / "README.md").read_text()):
        if block.commands and block.commands[0].startswith(first):
            return list(block.commands)
    raise AssertionError(f"the README has no bash block starting with {first!r}")


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

    def shell_env(self, **extra: str) -> dict[str, str]:
        """A new terminal in this clone, as the README's reader has it: nothing of the project
        (no venv on PATH, no MLflow or DVC variables) besides ``extra``."""
        home = self.root.parent / f"{self.root.name}-home"
        home.mkdir(exist_ok=True)
        return fresh_shell_env(home) | extra

    def shell(self, commands: list[str], timeout: float = 900, **extra: str):
        """README commands typed into a new shell in this clone, stopping at the first failure."""
        script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=self.root,
            env=self.shell_env(**extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"README commands failed (exit {proc.returncode}): {commands}\n--- stdout\n"
                f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc


class Server:
    """A README command that serves (``... make serve``), in the background on a free port."""

    def __init__(self, clone: Clone, commands: list[str], log_path: Path, **extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = clone.shell_env(
            SERVE_PORT=str(self.port),  # the Makefile's default is the fixed port 8000
            SERVING_RELOAD_INTERVAL="1",
            SERVING_WORKERS="1",
            SERVING_MODEL_CACHE_DIR=str(log_path.parent / "model-cache"),
            **extra,
        )
        self.proc = subprocess.Popen(
            ["bash", "-c", "set -euo pipefail\n" + "\n".join(commands) + "\n"],
            cwd=clone.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends make and the server
        )

    def version(self) -> str | None:
        try:
            response = requests.get(self.url + "/health/ready", timeout=5)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        return response.json()["model"]["version"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._log.close()


def _link_environment(dest: Path) -> None:
    """The project's environment in a clone, as tests/readme links it: `make` in the clone
    finds it up to date and installs nothing. git ignores the links."""
    (dest / ".venv").symlink_to(VENV_BIN.parent)
    if (REPO_ROOT / ".uv").exists():
        (dest / ".uv").symlink_to(REPO_ROOT / ".uv")
    (dest / ".git/info").mkdir(exist_ok=True)
    with open(dest / ".git/info/exclude", "a") as exclude:
        exclude.write("/.venv\n/.uv\n")
    for lock in ("pyproject.toml", "uv.lock"):
        os.utime(dest / lock, (0, 0))  # older than .venv/.installed


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
    _link_environment(dest)
    return Clone(dest, stack, user, password)


def git_clone(source: Clone, dest: Path, user: str, password: str) -> Clone:
    """A second teammate: ``git clone`` of the first one's repository."""
    subprocess.run(["git", "clone", "-q", str(source.root), str(dest)], check=True)
    clone = Clone(dest, source.stack, user, password)
    clone.run("git", "config", "user.email", f"{user}@example.invalid")
    clone.run("git", "config", "user.name", user)
    return clone
