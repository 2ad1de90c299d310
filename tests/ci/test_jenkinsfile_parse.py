"""The Jenkinsfile parsed by a real Groovy parser: npm-groovy-lint (CodeNarc and Groovy on
Java 17), installed under tests/ci/jenkins by `make jenkins-lint-deps`, offline.

Jenkins itself cannot run here; tests/ci/structure.py reads the stages and steps, and this
checks that Groovy accepts the file at all, so a syntax error fails `make test`, not the first
Jenkins build. Both files go through one JVM run (about 40 s on the shared 2-core machine).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci.conftest import JENKINSFILE
from tests.conftest import REPO_ROOT

LINT = REPO_ROOT / "tests" / "ci" / "jenkins" / "node_modules" / ".bin" / "npm-groovy-lint"
PARSE_ERROR = "NglParseError"


@pytest.fixture(scope="module")
def lint_results(tmp_path_factory) -> dict[str, list[dict]]:
    """npm-groovy-lint's findings for the real Jenkinsfile and for a copy missing a brace."""
    assert LINT.exists(), f"{LINT} is missing: run `make jenkins-lint-deps` (make test does)"
    root = tmp_path_factory.mktemp("jenkinsfile")
    real, broken = root / "real" / "Jenkinsfile", root / "broken" / "Jenkinsfile"
    real.parent.mkdir()
    broken.parent.mkdir()
    shutil.copy(JENKINSFILE, real)
    text = JENKINSFILE.read_text()
    cut = text.rindex("}")
    broken.write_text(text[:cut] + text[cut + 1 :])  # the pipeline block's closing brace
    proc = subprocess.run(
        # One cheap rule: what matters is the parse, which npm-groovy-lint always does.
        [
            str(LINT),
            "--noserver",
            "--output",
            "json",
            "--rulesets",
            "Indentation",
            "--failon",
            "error",
            str(real),
            str(broken),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    files = {str(Path(name).resolve()): found["errors"] for name, found in report["files"].items()}
    return {
        "real": files.get(str(real.resolve()), []),
        "broken": files.get(str(broken.resolve()), []),
    }


def test_groovy_parses_the_jenkinsfile(lint_results):
    errors = [e for e in lint_results["real"] if e["severity"] == "error"]
    assert errors == []


def test_groovy_rejects_a_jenkinsfile_missing_a_brace(lint_results):
    parse_errors = [e for e in lint_results["broken"] if e["rule"] == PARSE_ERROR]
    assert len(parse_errors) == 1, lint_results["broken"]
    assert parse_errors[0]["severity"] == "error"
    assert "Unexpected" in parse_errors[0]["msg"] or "expecting" in parse_errors[0]["msg"]
