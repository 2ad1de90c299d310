"""Tools for the manifest checks: kubectl (kustomize) from the venv, checkov in its own env.

checkov pins an old boto3 that the project's DVC S3 remote cannot live with, so it runs in an
isolated environment that ``uv tool run`` builds once and caches (version pinned here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

CHECKOV = "checkov==3.3.30"


def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"
    assert found.exists(), "kubectl is missing from the venv: the `deploy` extra installs it"
    return str(found)


def find_uv() -> str:
    for candidate in (shutil.which("uv"), REPO_ROOT / ".uv/bin/uv"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise AssertionError("uv is not on PATH nor in .uv/bin: run `make env`")


def checkov(directory: Path) -> dict:
    """checkov's JSON report on the manifests in ``directory``, with deploy/k8s/checkov.yaml."""
    proc = subprocess.run(
        [
            find_uv(), "tool", "run", "--quiet", "--from", CHECKOV, "checkov",
            "--config-file", str(REPO_ROOT / "deploy/k8s/checkov.yaml"),
            "--directory", str(directory),
            "--framework", "kubernetes",
            "--output", "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    if isinstance(report, list):
        (report,) = [r for r in report if r.get("check_type") == "kubernetes"]
    return report
