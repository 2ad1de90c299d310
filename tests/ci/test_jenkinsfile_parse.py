"""The Jenkinsfile parsed by a real Groovy parser: npm-groovy-lint (CodeNarc and Groovy on
Java 17), installed under tests/ci/jenkins by `make jenkins-lint-deps`, offline.

Jenkins itself cannot run here; tests/ci/structure.py reads the stages and steps, and this
checks that Groovy accepts the files at all (the pipeline's Jenkinsfile and the monitoring
loop's monitoring/Jenkinsfile), so a syntax error fails `make test`, not the first Jenkins build.
All files go through one JVM run (about 40 s on the shared 2-core machine).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci.conftest import JENKINSFILE
from tests.conftest import REPO_ROOT

MONITORING_JENKINSFILE = REPO_ROOT / "monitoring" / "Jenkinsfile"

LINT = REPO_ROOT / "tests" / "ci" / "jenkins" / "node_modules" / ".bin" / "npm-groovy-lint"
PARSE_ERROR = "NglParseError"


@pytest.fixture(scope="module")
def lint_results(tmp_path_factory) -> dict[str, list[dict]]:
    """npm-groovy-lint's findings for both real Jenkinsfiles and for a copy missing a brace."""
    assert LINT.exists(), f"{LINT} is missing: run `make jenkins-lint-deps` (make test does)"
    root = tmp_path_factory.mktemp("jenkinsfile")
    real, monitoring = root / "real" / "Jenkinsfile", root / "monitoring" / "Jenkinsfile"
    broken = root / "broken" / "Jenkinsfile"
    for path in (real, monitoring, broken):
        path.parent.mkdir()
    shutil.copy(JENKINSFILE, real)
    shutil.copy(MONITORING_JENKINSFILE, monitoring)
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
            str(monitoring),
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
    named = {"real": real, "monitoring": monitoring, "broken": broken}
    # Every file must be in the report: one left out would pass as "no errors".
    missing = [key for key, path in named.items() if str(path.resolve()) not in files]
    assert not missing, f"npm-groovy-lint did not report on {missing}: {sorted(files)}"
    return {key: files[str(path.resolve())] for key, path in named.items()}


@pytest.mark.parametrize("which", ["real", "monitoring"])
def test_groovy_parses_the_jenkinsfiles(lint_results, which):
    errors = [e for e in lint_results[which] if e["severity"] == "error"]
    assert errors == []


def test_groovy_rejects_a_jenkinsfile_missing_a_brace(lint_results):
    parse_errors = [e for e in lint_results["broken"] if e["rule"] == PARSE_ERROR]
    assert len(parse_errors) == 1, lint_results["broken"]
    assert parse_errors[0]["severity"] == "error"
    assert "Unexpected" in parse_errors[0]["msg"] or "expecting" in parse_errors[0]["msg"]
