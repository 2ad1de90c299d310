"""The monitoring loop in CI: the scheduled workflow and its Jenkins twin follow the CI rules
(tests/ci/structure.py) and call the same targets in the same order."""

from __future__ import annotations

from tests.ci.structure import (
    check_jenkinsfile,
    check_workflow,
    dedupe,
    load_jenkinsfile,
    load_workflow,
    read_makefile,
)
from tests.conftest import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "monitor.yml"
JENKINSFILE = REPO_ROOT / "monitoring" / "Jenkinsfile"
#: Steps only one CI system needs: Actions passes the flag between jobs; Jenkins reads the file.
ACTIONS_ONLY = {"monitor-flag"}


def test_the_monitor_workflow_follows_the_ci_rules():
    assert check_workflow(WORKFLOW, read_makefile(REPO_ROOT)) == []


def test_the_monitor_jenkinsfile_follows_the_ci_rules():
    assert check_jenkinsfile(JENKINSFILE, read_makefile(REPO_ROOT)) == []


def test_both_run_the_same_loop():
    actions = [t for t in load_workflow(WORKFLOW).targets() if t not in ACTIONS_ONLY]
    jenkins = load_jenkinsfile(JENKINSFILE).targets()
    assert dedupe(actions) == dedupe(jenkins) == [
        "env", "ci-dvc-pull", "monitor-fetch", "monitor", "monitor-push", "retrain", "register",
    ]  # fmt: skip


def test_the_workflow_is_scheduled_skips_without_logs_and_retrains_only_on_main():
    import yaml

    raw = yaml.safe_load(WORKFLOW.read_text())
    triggers = raw[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    jobs = raw["jobs"]
    assert jobs["monitor"]["if"] == "${{ vars.PREDICTION_LOG_URI != '' }}"
    assert jobs["monitor"]["outputs"]["retrain"] == "${{ steps.flag.outputs.retrain }}"
    assert jobs["retrain"]["needs"] == "monitor"
    assert jobs["retrain"]["if"] == (
        "needs.monitor.outputs.retrain == 'true' && github.ref == 'refs/heads/main'"
    )
    # Promotion stays manual: nothing here moves @champion.
    targets = load_workflow(WORKFLOW).targets()
    assert not {"promote", "rollback", "retag-image"} & set(targets)
