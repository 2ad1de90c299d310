"""Teammates on one team stack: PostgreSQL-backed MLflow with S3 artifacts, a DVC S3 remote.

Alice hosts the stack and types the README's team runbook into a new shell as written (run,
register, promote, `make ci-dvc-push`, then its `make serve` line on a free port) and adds Bob's
login with the README's command. Carol's clone, without Alice's dvc.lock, restores train and
evaluate from the run cache and trains nothing; Bob's clone, with it, runs no stage at all, then
trains a model of his own, registers and promotes it; the runbook's server on ``@champion``
follows the promotion and Alice's rollback. Then 100 promote/rollback events on the PostgreSQL
store, which the old single ``champion_history`` tag could not hold."""

from __future__ import annotations

import json
import os
import shlex
import time

import boto3
import mlflow
import pytest
import requests
from botocore.exceptions import ClientError
from mlflow.exceptions import MlflowException

from deploy.stack import ADMIN
from pipeline.registry import HISTORY_TAG, load_history
from tests.serving.conftest import build_export
from tests.team.conftest import Server, add_user, git_clone, new_clone, readme_commands

pytestmark = pytest.mark.team

MODEL = "penguins-classifier"


def wait_for(predicate, what: str, deadline_s: float = 120.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture
def admin(stack, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.client_env()["MLFLOW_TRACKING_PASSWORD"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.client_env()["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("USER", "history-test")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    yield mlflow.MlflowClient(tracking_uri=stack.client_env()["MLFLOW_TRACKING_URI"])
    mlflow.set_tracking_uri(None)


def runs_in(client, experiment: str) -> list[str]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return sorted(r.info.run_id for r in client.search_runs([found.experiment_id]))


def test_two_clones_share_runs_models_and_the_dvc_cache_and_serving_follows(stack, tmp_path, admin):
    add_user(stack, "alice", "alice-pw-12345")
    experiment = "tabular-mlops"

    # Alice hosts the stack: in a fresh repository (logistic regression: seconds to train) she
    # types the README's runbook into a new shell, as written, up to `make serve`. TEAM_DIR
    # (the Makefile's `.team` otherwise) is this test's running stack, so `make team-up` finds
    # it up and `make -s team-env` prints its variables: she acts as the admin.
    alice = new_clone(tmp_path / "alice", stack, "alice", "alice-pw-12345")
    alice.set_params(**{"train.estimator": "logistic_regression"})
    alice.commit("logistic regression")
    runbook = readme_commands("make team-up")
    bare = [shlex.join(shlex.split(c, comments=True)) for c in runbook]  # no trailing comments
    serve = next(i for i, c in enumerate(bare) if c.endswith("make serve"))
    assert bare[serve + 1 :] == ["make team-down"], runbook  # the fixture's teardown: down()
    # a terminal has USER: the registry's history names the person (pipeline.registry.actor)
    out = alice.shell(runbook[:serve], TEAM_DIR=str(stack.root), USER="alice").stdout
    assert "team stack already running" in out, out[-3000:]
    assert "url = s3://dvc/store" in (alice.root / ".dvc/config.local").read_text()
    run_a = alice.read_json("models/export/model.json")["lineage"]["run_id"]
    assert f"'{MODEL}' version 1 (run {run_a}) is @challenger" in out, out[-3000:]
    assert f"'{MODEL}' @champion -> version 1 (was none)" in out, out[-3000:]
    assert "ci-dvc-push: no DVC remote configured" not in out
    # evaluate's entry is recorded here (dvc repro keeps none: reports/plots is `cache: false`)
    assert "run_cache: recorded validate, preprocess, train, evaluate;" in out, out[-3000:]
    alice.commit("pipeline run: dvc.lock, metrics and plots")
    # The runbook's `make serve` line, on a free port (SERVE_PORT), follows @champion from now on.
    server = Server(
        alice,
        [c for c in runbook[:serve] if c.startswith("eval ")] + [runbook[serve]],
        tmp_path / "serving.log",
        TEAM_DIR=str(stack.root),
    )
    try:
        _share_and_follow(stack, tmp_path, admin, alice, run_a, server, experiment)
    finally:
        server.stop()


def _share_and_follow(stack, tmp_path, admin, alice, run_a, server, experiment):
    # The admin adds Bob's login with the README's command.
    login = readme_commands("curl --fail-with-body")
    env_line = [c for c in readme_commands("make team-up") if c.startswith("eval ")]
    alice.shell(env_line + login, TEAM_DIR=str(stack.root), BOB_PASSWORD="bob-pw-1234567")
    keys = stack.client_env()
    s3 = boto3.client(
        "s3",
        endpoint_url=keys["TEAM_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
    )
    stored = s3.list_objects_v2(Bucket="dvc", Prefix="store/").get("KeyCount", 0)
    assert stored > 0, "nothing reached the DVC remote"
    runs_before = runs_in(admin, experiment)
    assert runs_before == [run_a]
    # the tracking server stored the run's artifacts in S3, not on Alice's disk
    artifacts = s3.list_objects_v2(Bucket="mlflow", Prefix="artifacts/").get("KeyCount", 0)
    assert artifacts > 0 and not (alice.root / "mlruns").exists()

    # Carol clones Alice's repository at the commit before her run (no dvc.lock): `dvc repro
    # --pull` fetches the run cache and restores every stage Alice computed from it, train and
    # evaluate included (`make ci-dvc-push` pushed their `cache: false` metrics and plots and
    # recorded evaluate's entry: deploy/run_cache.py). ingest always reads data.source; export
    # (`persist`: a failed export keeps the last good one) and gate (it reads @champion) rerun
    # on the restored model, into Alice's MLflow run: no training, no new run.
    carol = git_clone(alice, tmp_path / "carol", "bob", "bob-pw-1234567")
    carol.run("git", "reset", "-q", "--hard", "HEAD~1")
    assert not (carol.root / "dvc.lock").exists()
    carol.make("team-dvc-remote")
    out = carol.dvc("repro", "--pull")
    log = out.stdout + out.stderr
    for stage in ("validate", "preprocess", "train", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run" in log, log[-3000:]
    ran = [s for s in STAGES if f"Running stage '{s}'" in log]
    assert ran == ["ingest", "export", "gate"], log[-3000:]
    assert runs_in(admin, experiment) == runs_before
    assert carol.read_json("models/export/model.json")["lineage"]["run_id"] == run_a
    assert carol.read_json("reports/metrics.json") == alice.read_json("reports/metrics.json")
    history = (carol.root / "reports/train_history.csv").read_text()
    assert history == (alice.root / "reports/train_history.csv").read_text()
    assert sorted(p.name for p in (carol.root / "reports/plots/roc").iterdir()) == sorted(
        p.name for p in (alice.root / "reports/plots/roc").iterdir()
    )

    # Bob clones Alice's repository at her commit (her dvc.lock): `make ci-dvc-pull` + `make
    # repro` trains nothing and logs no run: Bob has Alice's model, run id and all.
    bob = git_clone(alice, tmp_path / "bob", "bob", "bob-pw-1234567")
    bob.make("team-dvc-remote")
    bob.make("ci-dvc-pull")
    out = bob.make("repro")
    log = out.stdout + out.stderr
    # ingest always reads data.source and finds it unchanged; no other stage runs.
    ran = [s for s in STAGES if f"Running stage '{s}'" in log]
    assert ran == ["ingest"] and "is unchanged" in log, log
    assert runs_in(admin, experiment) == runs_before
    assert bob.read_json("models/export/model.json")["lineage"]["run_id"] == run_a

    # Bob trains a model of his own: a new run on the shared server, which Alice sees.
    bob.set_params(**{"train.logistic_regression.C": 0.5})
    bob.make("gate")
    run_b = bob.read_json("models/export/model.json")["lineage"]["run_id"]
    assert run_b != run_a
    alice_view = mlflow.MlflowClient(tracking_uri=stack.urls()["mlflow"])
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        "alice",
        "alice-pw-12345",
    )
    assert runs_in(alice_view, experiment) == sorted([run_a, run_b])
    gate = bob.read_json("reports/gate.json")
    assert gate["passed"] is True and gate["champion_version"] == "1"
    assert f"'{MODEL}' version 2 (run {run_b}) is @challenger" in bob.make("register").stdout
    v2 = alice_view.get_model_version(MODEL, "2")
    assert v2.tags["registered_by"] == "bob"

    # The runbook's server on @champion follows Bob's promotion and Alice's rollback.
    assert wait_for(lambda: server.version() == "1", "serving v1", 180), server.log()[-3000:]
    out = bob.make("promote", REASON="bob's C=0.5").stdout
    assert f"'{MODEL}' @champion -> version 2 (was 1)" in out
    wait_for(lambda: server.version() == "2", "the server to follow the promotion")
    out = alice.make("rollback", REASON="alice prefers v1").stdout
    assert f"'{MODEL}' @champion -> version 1 (was 2)" in out
    wait_for(lambda: server.version() == "1", "the server to follow the rollback")
    row = json.loads((bob.root / "models/export/golden.json").read_text())["rows"][0]
    response = requests.post(server.url + "/predict", json={"instances": [row["inputs"]]})
    assert response.status_code == 200, response.text
    assert response.json()["model"]["version"] == "1"
    assert "serve: models:/penguins-classifier@champion (SERVING_MODEL_URI)" in server.log()
    model = alice_view.get_registered_model(MODEL)
    events = [(e["action"], e["version"], e["by"]) for e in load_history(model)]
    assert events == [
        ("promote", "1", "alice"),
        ("promote", "2", "bob"),
        ("rollback", "1", "alice"),
    ]
    assert sorted(k for k in model.tags if k.startswith(HISTORY_TAG)) == [
        f"{HISTORY_TAG}.000001",
        f"{HISTORY_TAG}.000002",
        f"{HISTORY_TAG}.000003",
    ]


STAGES = ("ingest", "validate", "preprocess", "train", "evaluate", "export", "gate")


def _versions_with_a_passing_gate(client, name: str, count: int, export_dir) -> list[str]:
    """``count`` versions of a real export (promotion checks that the server could serve it)."""
    experiment = client.get_experiment_by_name("history") or client.get_experiment(
        client.create_experiment("history")
    )
    client.create_registered_model(name)
    versions = []
    for _ in range(count):
        run = client.create_run(experiment.experiment_id)
        client.log_artifacts(run.info.run_id, str(export_dir), "model")
        version = client.create_model_version(
            name, f"{run.info.artifact_uri}/model", run.info.run_id, tags={"gate_passed": "true"}
        )
        versions.append(str(version.version))
    return versions


def test_100_promote_and_rollback_events_fit_the_postgresql_store(stack, admin, tmp_path):
    from pipeline import registry

    name = "history-100"
    export_dir = build_export(tmp_path / "export", name=name)
    assert _versions_with_a_passing_gate(admin, name, 3, export_dir) == ["1", "2", "3"]
    # The store really enforces the column length the old single JSON tag outgrew.
    with pytest.raises(MlflowException, match="value too long|5000"):
        admin.set_registered_model_tag(name, "probe", "x" * 5200)

    registry.promote(name, "1", "start")
    for _ in range(24):  # 1 + 24 * 4 = 97 events, ending with v1 as champion
        # The versions were gated against no champion: forced, as the history is under test.
        assert registry.promote(name, "2", "a" * 2000, force=True).changed
        assert registry.promote(name, "3", "b", force=True).changed
        assert registry.rollback(name, "c").version == "2"
        assert registry.rollback(name, "d").version == "1"
    registry.promote(name, "2", "98", force=True)
    registry.promote(name, "3", "99", force=True)
    assert registry.rollback(name, "100").version == "2"

    model = admin.get_registered_model(name)
    events = load_history(model)
    assert len(events) == 100
    assert events[-1] == events[-1] | {"action": "rollback", "version": "2", "from": "3"}
    values = [v for k, v in model.tags.items() if k.startswith(HISTORY_TAG)]
    assert max(map(len, values)) < 1500  # a 2,000-character reason is cut
    assert sum(map(len, values)) > 5000  # what a single tag would have had to hold
    assert model.aliases["champion"] == "2"

    # `make rollback` on the command line, in a clone, returns to the champion before v2.
    clone = new_clone(
        tmp_path / "clone", stack, ADMIN, stack.client_env()["MLFLOW_TRACKING_PASSWORD"]
    )
    clone.set_params(**{"registry.model_name": name})
    out = clone.make("rollback", REASON="after 100 events").stdout
    assert f"rollback: '{name}' @champion -> version 1 (was 2)." in out
    failed = clone.make("rollback", check=False)
    assert failed.returncode != 0
    assert "has no previous champion to roll back to" in failed.stderr
    assert admin.get_registered_model(name).aliases["champion"] == "1"


def test_the_stack_checks_logins_and_keys_and_up_is_idempotent(stack):
    env = stack.client_env()
    url = env["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, auth=(ADMIN, "wrong"), timeout=30).status_code == 401
    ok = requests.get(url, auth=(ADMIN, env["MLFLOW_TRACKING_PASSWORD"]), timeout=30)
    assert ok.status_code == 200

    wrong = boto3.client(
        "s3",
        endpoint_url=env["TEAM_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id="nobody",
        aws_secret_access_key="wrong-secret",
    )
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        wrong.list_buckets()
    right = boto3.client(
        "s3",
        endpoint_url=env["TEAM_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    assert {"mlflow", "dvc"} <= {b["Name"] for b in right.list_buckets()["Buckets"]}

    pids = stack.state().pids
    assert stack.up(prometheus=False).startswith("team stack already running")
    assert stack.state().pids == pids
    assert oct(stack.credentials_file.stat().st_mode & 0o777) == "0o600"
