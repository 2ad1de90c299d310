"""The GitHub workflows, run for real by act on this machine (`make ci-act`, marker act).

Each scenario asserts on which jobs ran and how they ended, which were skipped, and what the
local OCI registry holds afterwards.
"""

from __future__ import annotations

import json

import mlflow
import pytest

from tests.ci.act.conftest import PIPELINE_ARTIFACT
from tests.ci.act.harness import git, registry_digest, registry_tags, scenario_repo

pytestmark = pytest.mark.act

MODEL = "penguins-classifier"


def _finished(run, job: str) -> int:
    """Index of the event that ended `job`."""
    return max(i for i, e in enumerate(run.events) if e.get("jobID") == job and "jobResult" in e)


def _started(run, job: str) -> int:
    return min(i for i, e in enumerate(run.events) if e.get("jobID") == job)


def _gate(artifacts) -> dict:
    return json.loads((artifacts / PIPELINE_ARTIFACT / "reports" / "gate.json").read_text())


def test_push_on_main_runs_checks_pipeline_then_release_and_pushes_the_image(act_session, released):
    run = released.run
    assert run.returncode == 0, run.tail()
    assert run.jobs() == {"checks": "success", "pipeline": "success", "release": "success"}
    assert "comment" not in run.job_order()  # pull requests only
    assert _started(run, "release") > max(_finished(run, "checks"), _finished(run, "pipeline"))
    release = run.steps("release")
    for step in ("Gate", "Register the model (@challenger)", "Smoke-test the image"):
        assert release[step] == "success", release
    assert release["Push the image (git sha and model version tags)"] == "success"
    # The jobs used this checkout's environment through the cache stand-in.
    assert "cache stand-in: restored venv-" in run.output("checks")

    version = mlflow.MlflowClient(act_session.tracking_uri).get_model_version_by_alias(
        MODEL, "challenger"
    )
    image = act_session.image("push")
    repository = image.split("/", 1)[1]
    assert registry_tags(act_session.registry, repository) == sorted(
        [released.sha, f"model-{version.version}"]
    )
    assert registry_digest(f"{image}:{released.sha}") == registry_digest(
        f"{image}:model-{version.version}"
    )
    assert _gate(released.artifacts)["passed"] is True


def test_a_pull_request_runs_checks_and_pipeline_comments_and_pushes_nothing(act_session):
    repo = scenario_repo(act_session.root / "pr-repo")
    head, base = git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD~1")
    payload = {
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"sha": head, "ref": "feature", "repo": {"full_name": "acme/tabular-mlops"}},
            "base": {"sha": base, "ref": "main", "repo": {"full_name": "acme/tabular-mlops"}},
        },
    }
    run, artifacts = act_session.run(
        repo,
        "pr",
        "pull_request",
        ".github/workflows/ci.yml",
        payload=payload,
        secrets={"GITHUB_TOKEN": "token-for-the-gh-stand-in"},
    )
    assert run.returncode == 0, run.tail()
    assert run.jobs() == {"checks": "success", "pipeline": "success", "comment": "success"}
    assert "release" not in run.job_order()
    posted = [
        json.loads(line) for line in (act_session.root / "pr" / "gh.jsonl").read_text().splitlines()
    ]
    assert [(p["method"], p["endpoint"]) for p in posted] == [
        ("GET", "repos/acme/tabular-mlops/issues/7/comments"),
        ("POST", "repos/acme/tabular-mlops/issues/7/comments"),
    ]
    body = posted[1]["body"]
    assert body.startswith("<!-- tabular-mlops-ci-report -->"), body[:200]
    assert "f1_macro" in body and "gate" in body.lower()
    assert registry_tags(act_session.registry, "acme/pr") == []


def test_a_failed_gate_stops_the_release_and_pushes_nothing(act_session):
    repo = scenario_repo(
        act_session.root / "gate-repo", {"      f1_macro: 0.50": "      f1_macro: 1.01"}
    )
    payload = {
        "ref": "refs/heads/main",
        "before": git(repo, "rev-parse", "HEAD~1"),
        "after": git(repo, "rev-parse", "HEAD"),
    }
    run, artifacts = act_session.run(
        repo, "gate", "push", ".github/workflows/ci.yml", payload=payload
    )
    assert run.returncode != 0
    assert run.jobs() == {"checks": "success", "pipeline": "failure"}, run.tail()
    assert "release" not in run.job_order()
    pipeline = run.steps("pipeline")
    assert pipeline["Report (metrics diff, gate, plots diff)"] == "success", pipeline
    gate = _gate(artifacts)
    assert gate["passed"] is False
    failed = [c["name"] for c in gate["checks"] if not c["passed"]]
    assert failed == ["floor.f1_macro"], gate
    assert registry_tags(act_session.registry, "acme/gate") == []


def test_promote_moves_the_alias_and_retags_champion(act_session, released):
    assert released.run.returncode == 0, "the push scenario failed; see its test"
    client = mlflow.MlflowClient(act_session.tracking_uri)
    challenger = client.get_model_version_by_alias(MODEL, "challenger").version
    assert "champion" not in client.get_registered_model(MODEL).aliases
    run, _ = act_session.run(
        released.repo,
        "push",  # the image the release pushed
        "workflow_dispatch",
        ".github/workflows/promote.yml",
        inputs={"version": "challenger", "rollback": "false", "reason": "ci-act"},
        payload={"ref": "refs/heads/main", "inputs": {"version": "challenger", "reason": "ci-act"}},
    )
    assert run.returncode == 0, run.tail()
    assert run.jobs() == {"promote": "success"}
    steps = run.steps("promote")
    assert (
        steps["Promote"] == "success" and steps["Tag the champion's image as champion"] == "success"
    )
    assert steps.get("Roll back", "skipped") == "skipped", steps
    assert client.get_model_version_by_alias(MODEL, "champion").version == challenger
    image = act_session.image("push")
    assert "champion" in registry_tags(act_session.registry, image.split("/", 1)[1])
    assert registry_digest(f"{image}:champion") == registry_digest(f"{image}:model-{challenger}")


def _drifted_log(directory) -> None:
    """200 served rows in the server's format, from the last hour, with three of the six
    features shifted far outside the training data: the monitor must ask for retraining."""
    from datetime import UTC, datetime, timedelta

    from palmerpenguins import load_penguins

    from tests.monitoring.conftest import log_records, write_jsonl

    frame = load_penguins().dropna().sample(200, replace=True, random_state=0)
    for column, shift in (("bill_length_mm", 25.0), ("flipper_length_mm", 40.0)):
        frame[column] = frame[column] + shift
    frame["body_mass_g"] = frame["body_mass_g"] * 1.8
    features = [c for c in frame.columns if c not in ("species", "year")]
    start = datetime.now(UTC) - timedelta(hours=1)
    write_jsonl(
        directory / "predictions.jsonl",
        log_records(frame, features, frame["species"].tolist(), start=start, prefix="act"),
    )


def test_monitor_finds_drift_and_retrains_a_challenger(act_session, tmp_path):
    """monitor.yml by workflow_dispatch on a drifted log: the report is uploaded, the flag
    is raised, and the retrain job retrains, gates and registers a new @challenger."""
    logs = tmp_path / "team-logs"
    logs.mkdir()
    _drifted_log(logs)
    client = mlflow.MlflowClient(act_session.tracking_uri)
    before = {v.version for v in client.search_model_versions(f"name='{MODEL}'")}

    repo = scenario_repo(act_session.root / "monitor-repo")
    run, artifacts = act_session.run(
        repo,
        "monitor",
        "workflow_dispatch",
        ".github/workflows/monitor.yml",
        variables={"PREDICTION_LOG_URI": str(logs)},
        payload={"ref": "refs/heads/main", "inputs": {}},
    )
    assert run.returncode == 0, run.tail()
    assert run.jobs() == {"monitor": "success", "retrain": "success"}, run.tail()
    assert _started(run, "retrain") > _finished(run, "monitor")
    monitor = run.steps("monitor")
    assert monitor["Monitor (drift, volume, live metric)"] == "success", monitor
    assert monitor.get("Push the drift metrics", "skipped") == "skipped"  # no PUSHGATEWAY_URL
    assert "retrain=true" in run.output("monitor")

    report = artifacts / "monitoring-report" / "reports" / "monitoring"
    summary = json.loads((report / "summary.json").read_text())
    drifted = set(summary["drift"]["drifted_features"])
    assert {"bill_length_mm", "flipper_length_mm", "body_mass_g"} <= drifted, summary
    assert summary["retrain"] is True
    assert (report / "report.html").is_file()

    gate = json.loads((artifacts / "retrain-reports" / "reports" / "gate.json").read_text())
    assert gate["passed"] is True
    after = {v.version for v in client.search_model_versions(f"name='{MODEL}'")}
    (new,) = after - before
    assert client.get_model_version_by_alias(MODEL, "challenger").version == new
