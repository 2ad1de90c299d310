"""Fixtures for the act scenarios: one registry, MLflow store and cache per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ci.act.harness import (
    CHECKS_PYTEST,
    ActRun,
    container_tool,
    git,
    oci_registry,
    remove_local_images,
    run_act,
    scenario_repo,
    seed_environment_cache,
)

PIPELINE_ARTIFACT = "pipeline-reports"


@dataclass
class ActSession:
    root: Path
    registry: str  # host:port of the OCI registry
    tracking_uri: str  # the "shared MLflow server" the workflows' secrets name
    cache: Path

    def image(self, scenario: str) -> str:
        return f"{self.registry}/acme/{scenario}"

    def run(
        self, repo: Path, scenario: str, event: str, workflow: str, **kwargs
    ) -> tuple[ActRun, Path]:
        """act EVENT for one scenario; returns the run and its artifact directory."""
        work = self.root / scenario
        artifacts = work / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        env = {
            "CONTAINER_TOOL": container_tool(),
            "ACT_STANDIN_CACHE": str(self.cache),
            "ACT_STANDIN_ARTIFACTS": str(artifacts),
            "GH_STANDIN_LOG": str(work / "gh.jsonl"),
            # The checks job's `make test`: a bounded subset (this suite runs inside make ci-act).
            "PYTEST_ADDOPTS": CHECKS_PYTEST,
            "TEST_WORKERS": "1",  # one file: a second process would only add its start-up
        }
        secrets = {"MLFLOW_TRACKING_URI": self.tracking_uri} | kwargs.pop("secrets", {})
        variables = {"IMAGE": self.image(scenario)} | kwargs.pop("variables", {})
        run = run_act(
            repo, event, workflow, work, env=env, secrets=secrets, variables=variables, **kwargs
        )
        return run, artifacts


@pytest.fixture(scope="session")
def act_session(tmp_path_factory) -> ActSession:
    import mlflow

    root = tmp_path_factory.mktemp("act")
    store = root / "mlflow"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    # Artifacts outside any job's workspace (act deletes those), as a tracking server keeps them.
    mlflow.MlflowClient(uri).create_experiment(
        "tabular-mlops", artifact_location=(store / "artifacts").as_uri()
    )
    cache = root / "cache"
    seed_environment_cache(cache)
    with oci_registry(root / "registry") as registry:
        try:
            yield ActSession(root, registry, uri, cache)
        finally:
            remove_local_images(registry)


@dataclass
class Released:
    repo: Path
    sha: str
    run: ActRun
    artifacts: Path


@pytest.fixture(scope="session")
def released(act_session) -> Released:
    """`act push` on main: the scenario the promote workflow builds on."""
    repo = scenario_repo(act_session.root / "push-repo")
    sha = git(repo, "rev-parse", "HEAD")
    payload = {"ref": "refs/heads/main", "before": git(repo, "rev-parse", "HEAD~1"), "after": sha}
    run, artifacts = act_session.run(
        repo, "push", "push", ".github/workflows/ci.yml", payload=payload
    )
    return Released(repo, sha, run, artifacts)
