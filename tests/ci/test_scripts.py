"""The scripts behind the CI-only make targets, run for real against stand-in tools.

``gh`` and the container tool are replaced by small executables that log their calls (the real
ones would reach GitHub or a registry); ``dvc``, ``git`` and MLflow are the real ones, in a
temporary project.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.ci.conftest import VENV_BIN, run_tool
from tests.conftest import REPO_ROOT

SCRIPTS = REPO_ROOT / ".github" / "scripts"
MARKER = "<!-- tabular-mlops-ci-report -->"


def _env(fake_bin=None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "REGISTRY_"))}
    env.pop("BUILD_URL", None)
    if fake_bin is not None:
        env["PATH"] = f"{fake_bin.dir}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


# ------------------------------------------------------------------ pr-comment.sh (make ci-comment)
def _fake_gh(fake_bin, comments: list[dict]) -> None:
    """`gh api` that lists ``comments`` through the real jq filter, and echoes an html_url."""
    listing = fake_bin.dir / "comments.json"
    listing.write_text(json.dumps(comments))
    fake_bin.add(
        "gh",
        f"""
jq_filter=""; paginate=0
while [ $# -gt 0 ]; do
  case $1 in --jq) jq_filter=$2; shift;; --paginate) paginate=1;; esac; shift
done
if [ $paginate = 1 ]; then jq -r "$jq_filter" "{listing}"; else echo https://example.invalid/c; fi
""",
    )


def _comment(fake_bin, body: Path) -> subprocess.CompletedProcess:
    env = _env(fake_bin, GH_TOKEN="t", GITHUB_REPOSITORY="acme/models", PR_NUMBER="7")
    return run_tool(SCRIPTS / "pr-comment.sh", body, env=env)


@pytest.fixture
def body(tmp_path) -> Path:
    path = tmp_path / "comment.md"
    path.write_text(f"{MARKER}\n## Model report\n")
    return path


def test_pr_comment_posts_a_new_comment_when_there_is_none(fake_bin, body):
    _fake_gh(fake_bin, [{"id": 1, "user": {"type": "User"}, "body": "LGTM"}])
    proc = _comment(fake_bin, body)
    assert proc.returncode == 0, proc.stderr
    calls = fake_bin.calls()
    assert len(calls) == 2
    assert calls[0].startswith("gh api --paginate repos/acme/models/issues/7/comments --jq")
    assert calls[1] == (
        f"gh api --method POST repos/acme/models/issues/7/comments -F body=@{body} --jq .html_url"
    )


def test_pr_comment_updates_the_bots_earlier_comment(fake_bin, body):
    _fake_gh(
        fake_bin,
        [
            {"id": 10, "user": {"type": "User"}, "body": f"quoting {MARKER}"},
            {"id": 11, "user": {"type": "Bot"}, "body": "another bot"},
            {"id": 12, "user": {"type": "Bot"}, "body": f"{MARKER}\nold report"},
        ],
    )
    proc = _comment(fake_bin, body)
    assert proc.returncode == 0, proc.stderr
    assert fake_bin.calls()[1] == (
        f"gh api --method PATCH repos/acme/models/issues/comments/12 -F body=@{body} --jq .html_url"
    )


def test_pr_comment_refuses_a_body_without_the_marker(fake_bin, tmp_path):
    _fake_gh(fake_bin, [])
    plain = tmp_path / "plain.md"
    plain.write_text("## Model report\n")
    proc = _comment(fake_bin, plain)
    assert proc.returncode == 1
    assert f"lacks the marker line {MARKER}" in proc.stderr
    assert fake_bin.calls() == []


def test_pr_comment_needs_the_report_first(fake_bin, tmp_path):
    _fake_gh(fake_bin, [])
    proc = _comment(fake_bin, tmp_path / "missing.md")
    assert proc.returncode == 1
    assert "is missing or empty; run `make ci-report` first" in proc.stderr


# ------------------------------------------------------ image.sh (make push-image, retag-image)
def _image(fake_bin, *args: str, fail_on: str = "", **env: str) -> subprocess.CompletedProcess:
    """image.sh with a stand-in container tool; `login` keeps what it reads on stdin."""
    password = fake_bin.dir / "password"
    fake_bin.add(
        "fake-docker",
        f'[ "$1" = login ] && cat > "{password}"\n'
        f'[ -n "{fail_on}" ] && [ "$1" = "{fail_on}" ] && exit 1; exit 0',
    )
    return run_tool(
        SCRIPTS / "image.sh",
        *args,
        env=_env(fake_bin, CONTAINER_TOOL=str(fake_bin.dir / "fake-docker"), **env),
    )


def test_push_logs_in_pushes_every_tag_and_logs_out(fake_bin):
    proc = _image(
        fake_bin,
        "push",
        "ghcr.io/acme/models",
        "abc123",
        "model-4",
        REGISTRY_USER="bot",
        REGISTRY_PASSWORD="s3cret",
    )
    assert proc.returncode == 0, proc.stderr
    assert fake_bin.calls() == [
        "fake-docker login ghcr.io --username bot --password-stdin",
        "fake-docker push ghcr.io/acme/models:abc123",
        "fake-docker tag ghcr.io/acme/models:abc123 ghcr.io/acme/models:model-4",
        "fake-docker push ghcr.io/acme/models:model-4",
        "fake-docker logout ghcr.io",
    ]
    assert (fake_bin.dir / "password").read_text() == "s3cret"  # on stdin, not in argv
    assert "s3cret" not in proc.stdout + proc.stderr
    assert "pushed ghcr.io/acme/models:abc123 as well as ghcr.io/acme/models:model-4" in (
        proc.stdout
    )


def test_push_without_a_password_uses_the_existing_login(fake_bin):
    proc = _image(fake_bin, "push", "localhost:5000/models", "abc123")
    assert proc.returncode == 0, proc.stderr
    assert fake_bin.calls() == ["fake-docker push localhost:5000/models:abc123"]


def test_a_failed_push_fails_and_still_logs_out(fake_bin):
    proc = _image(
        fake_bin,
        "push",
        "ghcr.io/acme/models",
        "abc123",
        fail_on="push",
        REGISTRY_USER="bot",
        REGISTRY_PASSWORD="s3cret",
    )
    assert proc.returncode == 1
    assert fake_bin.calls()[-1] == "fake-docker logout ghcr.io"


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("tabular-mlops-serving", "names no registry host; set IMAGE, e.g. ghcr.io/OWNER/REPO"),
        ("ghcr.io/Acme/Models", "has capitals; registries take lowercase repository names"),
    ],
    ids=["no-registry", "capitals"],
)
def test_push_refuses_an_image_name_a_registry_would_reject(fake_bin, image, message):
    proc = _image(fake_bin, "push", image, "abc123")
    assert proc.returncode == 1
    assert f"image.sh: IMAGE '{image}' {message}" in proc.stderr
    assert fake_bin.calls() == []


def test_retag_points_champion_at_a_released_version(fake_bin):
    proc = _image(fake_bin, "retag", "ghcr.io/acme/models", "model-4", "champion")
    assert proc.returncode == 0, proc.stderr
    assert fake_bin.calls() == [
        "fake-docker pull ghcr.io/acme/models:model-4",
        "fake-docker tag ghcr.io/acme/models:model-4 ghcr.io/acme/models:champion",
        "fake-docker push ghcr.io/acme/models:champion",
    ]


def test_retag_of_a_version_ci_never_released_says_so(fake_bin):
    proc = _image(fake_bin, "retag", "ghcr.io/acme/models", "model-9", "champion", fail_on="pull")
    assert proc.returncode == 1
    assert "ghcr.io/acme/models:model-9 is not in the registry" in proc.stderr
    assert fake_bin.calls() == ["fake-docker pull ghcr.io/acme/models:model-9"]


# ---------------------------------------------------- ci-report.sh and the DVC remote targets
def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, timeout=60)


@pytest.fixture
def dvc_project(tmp_path) -> Path:
    """A git + DVC repository with committed metrics, then changed metrics in the workspace."""
    root = tmp_path / "project"
    (root / "reports" / "plots").mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "ci@example.invalid")
    _git(root, "config", "user.name", "CI")
    subprocess.run([VENV_BIN / "dvc", "init", "-q"], cwd=root, check=True, timeout=60)
    (root / "dvc.yaml").write_text(
        "metrics:\n  - reports/metrics.json\n"
        "plots:\n  - reports/plots/roc.csv:\n      x: fpr\n      y: tpr\n"
    )
    (root / "reports" / "metrics.json").write_text('{"f1_macro": 0.9, "roc_auc_ovr": 0.95}')
    (root / "reports" / "plots" / "roc.csv").write_text("fpr,tpr\n0,0\n0.1,0.9\n1,1\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "baseline")
    (root / "reports" / "metrics.json").write_text('{"f1_macro": 0.97, "roc_auc_ovr": 0.99}')
    return root


def _report(root: Path, *base: str) -> subprocess.CompletedProcess:
    return run_tool(SCRIPTS / "ci-report.sh", VENV_BIN / "dvc", "reports/ci", *base, cwd=root)


def test_ci_report_diffs_metrics_and_includes_the_gate(dvc_project):
    (dvc_project / "reports" / "gate.md").write_text("# Model gate: PASSED\n\n| check |\n")
    proc = _report(dvc_project, "main")
    assert proc.returncode == 0, proc.stderr
    comment = (dvc_project / "reports" / "ci" / "comment.md").read_text()
    base = subprocess.run(
        ["git", "rev-parse", "--short", "main"], cwd=dvc_project, capture_output=True, text=True
    ).stdout.strip()
    assert comment.startswith(f"{MARKER}\n## Model report for `{base}`\n")
    assert f"### Metrics against `{base}`" in comment
    row = next(line for line in comment.splitlines() if "f1_macro" in line)
    assert "0.9" in row and "0.97" in row and "0.07" in row  # old, new, change
    assert "### Model gate: PASSED" in comment  # the gate report, one heading level down
    assert "`plots/index.html` in `reports/ci/plots/index.html`" in comment
    assert (dvc_project / "reports" / "ci" / "plots" / "index.html").is_file()
    # the report folder keeps itself out of git
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=dvc_project, capture_output=True, text=True
    ).stdout
    assert "reports/ci" not in status


def test_ci_report_when_the_pipeline_stopped_before_the_gate(dvc_project):
    proc = _report(dvc_project, "0000000000000000000000000000000000000000")
    assert proc.returncode == 0, proc.stderr
    assert "is not a commit in this clone; comparing with HEAD" in proc.stderr
    comment = (dvc_project / "reports" / "ci" / "comment.md").read_text()
    assert "### Model gate: not run" in comment
    assert "_The pipeline stopped before the gate; see the job log._" in comment


def _make(root: Path, target: str) -> subprocess.CompletedProcess:
    """A target of the real Makefile run in ``root`` (``env`` taken as done)."""
    return run_tool(
        "make", "-f", REPO_ROOT / "Makefile", "-o", "env", target, f"BIN={VENV_BIN}", cwd=root
    )


def test_dvc_remote_targets_skip_without_a_remote(dvc_project):
    assert _make(dvc_project, "ci-dvc-pull").stdout.strip() == (
        "ci-dvc-pull: no DVC remote configured; nothing to pull"
    )
    assert _make(dvc_project, "ci-dvc-push").stdout.strip() == (
        "ci-dvc-push: no DVC remote configured; nothing to push"
    )


def test_dvc_remote_targets_push_and_pull_the_cache(dvc_project, tmp_path):
    dvc = str(VENV_BIN / "dvc")
    remote = tmp_path / "remote"
    subprocess.run([dvc, "remote", "add", "-d", "store", str(remote)], cwd=dvc_project, check=True)
    (dvc_project / "data.csv").write_text("a,b\n1,2\n")
    subprocess.run([dvc, "add", "-q", "data.csv"], cwd=dvc_project, check=True, timeout=60)

    pushed = _make(dvc_project, "ci-dvc-push")
    assert pushed.returncode == 0, pushed.stderr
    assert any(p.is_file() for p in remote.rglob("*"))

    subprocess.run(["rm", "-rf", ".dvc/cache", "data.csv"], cwd=dvc_project, check=True)
    pulled = _make(dvc_project, "ci-dvc-pull")
    assert pulled.returncode == 0, pulled.stderr
    assert (dvc_project / "data.csv").read_text() == "a,b\n1,2\n"


# ------------------------------------------------------------------- model_version.py (tags)
def _load_model_version():
    spec = importlib.util.spec_from_file_location("model_version", SCRIPTS / "model_version.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """A sqlite MLflow store holding two versions of the project's model, v2 as champion."""
    import mlflow

    from pipeline.config import load_params
    from pipeline.registry import model_name

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with contextlib.chdir(REPO_ROOT):  # data.contract is relative to the project
        name = model_name(load_params("params.yaml"))
    client = mlflow.MlflowClient(uri)
    client.create_registered_model(name)
    for run_id in ("run-a", "run-b"):
        client.create_model_version(name, source=str(root), tags={"pipeline_run_id": run_id})
    client.set_registered_model_alias(name, "champion", "2")
    return uri


@pytest.fixture
def model_version(registry, monkeypatch, capsys):
    """Run the script's main() against the registry; returns (exit status, stdout, stderr)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.chdir(REPO_ROOT)  # params.yaml
    module = _load_model_version()

    def run(*args: str) -> tuple[int, str, str]:
        status = module.main(list(args))
        out = capsys.readouterr()
        return status, out.out, out.err

    # main() calls mlflow.set_tracking_uri, a process-wide setting: put it back afterwards.
    from mlflow.tracking._tracking_service import utils

    before = utils._tracking_uri
    yield run
    utils._tracking_uri = before


def _export(tmp_path, run_id: str) -> str:
    model_dir = tmp_path / f"export-{run_id}"
    model_dir.mkdir()
    from model_spec.descriptor import InputSpec, Lineage, ModelDescriptor, OnnxSpec
    from model_spec.task import Task

    ModelDescriptor(
        name="penguins-classifier",
        task=Task.BINARY,
        estimator="logistic_regression",
        family="sklearn",
        target="sex",
        inputs=(InputSpec("bill_length_mm", "bill_length_mm", "numeric", False),),
        onnx=OnnxSpec(),
        classes=("female", "male"),
        lineage=Lineage(run_id=run_id),
    ).write(model_dir)
    return str(model_dir)


def test_model_version_finds_the_version_of_an_export(tmp_path, model_version):
    assert model_version("--model-dir", _export(tmp_path, "run-a")) == (0, "1\n", "")


def test_model_version_follows_an_alias(model_version):
    assert model_version("--alias", "champion") == (0, "2\n", "")


def test_model_version_of_an_unregistered_export_fails_clearly(tmp_path, model_version):
    model_dir = _export(tmp_path, "run-z")
    assert model_version("--model-dir", model_dir) == (
        1,
        "",
        f"model_version: the export in '{model_dir}' (run run-z) is not a version of "
        "'penguins-classifier'; run `make register` first.\n",
    )


def test_model_version_of_a_missing_alias_fails_clearly(model_version):
    assert model_version("--alias", "challenger") == (
        1,
        "",
        "model_version: model 'penguins-classifier' has no '@challenger' alias in the registry.\n",
    )
