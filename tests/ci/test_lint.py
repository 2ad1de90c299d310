"""actionlint on every workflow, hadolint on the serving Dockerfile: both must report nothing.

Each linter also gets a deliberately broken file, so a linter that silently checks nothing
(wrong path, wrong binary) cannot make these tests pass.
"""

from __future__ import annotations

import pytest

from tests.ci.conftest import VENV_BIN, WORKFLOW_FILES, run_tool
from tests.conftest import REPO_ROOT

ACTIONLINT = VENV_BIN / "actionlint"
HADOLINT = VENV_BIN / "hadolint"
DOCKERFILE = REPO_ROOT / "serving" / "Dockerfile"


def test_there_are_workflows_to_lint():
    names = [p.name for p in WORKFLOW_FILES]
    assert "ci.yml" in names and "promote.yml" in names, names


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actionlint_reports_nothing(workflow):
    proc = run_tool(ACTIONLINT, "-no-color", "-oneline", workflow.relative_to(REPO_ROOT))
    assert (proc.stdout + proc.stderr) == "", proc.stdout + proc.stderr
    assert proc.returncode == 0


def test_actionlint_reports_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    needs: [nowhere]\n"
        "    steps:\n"
        "      - run: make lint\n"
    )
    proc = run_tool(ACTIONLINT, "-no-color", "-oneline", broken, cwd=tmp_path)
    assert proc.returncode == 1
    assert 'job "build" needs job "nowhere" which does not exist' in proc.stdout


def test_hadolint_reports_nothing_on_the_serving_dockerfile():
    assert DOCKERFILE.is_file(), f"{DOCKERFILE.relative_to(REPO_ROOT)} does not exist (yet)"
    proc = run_tool(HADOLINT, "--no-color", DOCKERFILE.relative_to(REPO_ROOT))
    assert (proc.stdout + proc.stderr) == "", proc.stdout + proc.stderr
    assert proc.returncode == 0


def test_hadolint_reports_a_broken_dockerfile(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:latest\nRUN cd /srv && pip install flask\n")
    proc = run_tool(HADOLINT, "--no-color", broken, cwd=tmp_path)
    assert proc.returncode == 1
    assert "DL3007" in proc.stdout  # the `latest` tag
    assert "DL3013" in proc.stdout  # pip install without a pinned version
