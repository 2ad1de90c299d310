"""Schemathesis with every check against a real server process (``python -m serving.server``).

The server runs as the image runs it, with a token, the feedback log on and a small row limit
(so batches over it stay cheap). Schemathesis reads the server's own ``/openapi.json`` and runs
all its phases (examples, coverage, fuzzing, stateful) with ``--checks all``: responses must
match the document, schema-valid bodies must be accepted and schema-violating ones refused,
without the token every operation must answer 401. The number of examples is bounded and the
seed fixed, so a run is reproducible. Its settings (``schemathesis.toml``) and its one excused
failure (``schemathesis_hooks.py``) say why they are there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

HERE = Path(__file__).parent
TOKEN = "schemathesis-token-0123456789"
MAX_ROWS = "12"
EXAMPLES = "40"
SEED = "20261201"

pytestmark = pytest.mark.serving


def run_schemathesis(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report-dir",
        str(tmp_path / "report"),
        "--suppress-health-check",
        "too_slow",  # a loaded CI machine is not the API's fault
        *extra,
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.serving.schemathesis_hooks",
        "PYTHONPATH": str(REPO_ROOT),
        "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis"),
    }
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_schemathesis_all_checks_pass_against_a_real_server(live_server, exported_model, tmp_path):
    feedback = tmp_path / "feedback.jsonl"
    server = live_server(
        SERVING_MODEL_DIR=str(exported_model),
        SERVING_API_TOKEN=TOKEN,
        SERVING_MAX_ROWS=MAX_ROWS,
        SERVING_FEEDBACK_LOG=str(feedback),
        SERVING_WORKERS="1",
    )
    result = run_schemathesis(server.url, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert "No issues found" in output or " passed" in output, output[-5000:]
    assert "Operations:       6 selected / 6 total" in output, output[-5000:]
    assert server.proc.poll() is None, server.log()
