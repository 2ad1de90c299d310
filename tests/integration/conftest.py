"""Integration fixtures: a temporary copy of the repository that runs the real DVC pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

#: What a fresh clone holds that the pipeline needs (code comes from the installed package).
PROJECT_FILES = ("params.yaml", "dvc.yaml", "MLproject", "data/contract.yaml", "pipeline", ".dvc")


@dataclass
class Project:
    """A throw-away copy of the project with its own git repo, DVC cache and MLflow store."""

    root: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)  # the copy's own embedded store
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 900):
        proc = subprocess.run(
            list(args),
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                f"\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc

    def dvc(self, *args: str, check: bool = True):
        return self.run(str(Path(sys.executable).parent / "dvc"), *args, check=check)

    def python(self, *args: str, check: bool = True):
        return self.run(sys.executable, *args, check=check)

    def set_params(self, **dotted) -> None:
        write_params(self.root / "params.yaml", self.root / "params.yaml", **dotted)

    def commit(self, message: str = "state") -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)

    def read_json(self, rel: str):
        import json

        return json.loads((self.root / rel).read_text())


def write_params(source: Path, dest: Path, **dotted) -> Path:
    """Write ``source``'s params to ``dest`` with dotted keys (``train.seed=1``) changed."""
    raw = yaml.safe_load(source.read_text())
    for key, value in dotted.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def make_project(dest: Path) -> Project:
    dest.mkdir(parents=True, exist_ok=True)
    for rel in PROJECT_FILES:
        src = REPO_ROOT / rel
        if not src.exists():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(
                src, target, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache")
            )
        else:
            shutil.copy2(src, target)
    (dest / ".gitignore").write_text("/mlruns/\n__pycache__/\n")
    project = Project(dest)
    project.run("git", "init", "-q", "-b", "main")
    project.run("git", "config", "user.email", "ci@example.invalid")
    project.run("git", "config", "user.name", "CI")
    project.commit("copy of the project")
    return project


@pytest.fixture
def project(tmp_path) -> Project:
    return make_project(tmp_path / "project")
