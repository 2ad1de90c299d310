"""deploy/compose.yaml describes the same stack as deploy/stack.py (no Docker engine here to run
it): the same services and settings, published on 127.0.0.1 only, secrets never inline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from deploy.stack import ARTIFACTS, BUCKETS
from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "deploy/compose.yaml"


def test_compose_runs_the_stack_of_make_team_up_on_loopback():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "s3", "mlflow", "serving", "prometheus"}
    mlflow = services["mlflow"]
    assert {
        f"--artifacts-destination={ARTIFACTS}",
        "--serve-artifacts",
        "--app-name=basic-auth",
    } <= set(mlflow["command"])
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert f"-bucket={','.join(BUCKETS)}" in services["s3"]["command"]
    serving = services["serving"]
    assert serving["environment"]["SERVING_MODEL_URI"].endswith("@champion")
    assert serving["build"]["args"]["WITH_REGISTRY"] == "true"
    assert serving["read_only"] is True
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_takes_every_secret_from_the_environment_file():
    text = COMPOSE.read_text()
    for key in ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        assert re.search(rf"\$\{{{key}:\?", text), f"{key} is not required from deploy/.env"
    example = (REPO_ROOT / "deploy/compose.env.example").read_text()
    values = dict(line.split("=", 1) for line in example.splitlines() if "=" in line)
    assert {v for k, v in values.items() if k != "MODEL_NAME"} <= {
        "change-me",
        "change-me-to-64-hex-characters",
    }
    ignored = (REPO_ROOT / ".gitignore").read_text()
    assert "/deploy/.env" in ignored and "/deploy/.serving-token" in ignored


def test_the_mlflow_image_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run(
        [str(hadolint), str(REPO_ROOT / "deploy/mlflow/Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
