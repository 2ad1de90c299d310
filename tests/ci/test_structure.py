"""The workflows, the Jenkinsfile and `make ci` call the same targets, and nothing is published
without the gate and the smoke test, or from a branch other than main.

The real files must pass every rule of :mod:`tests.ci.structure`; copies broken on purpose must
fail with the rule's message, so the checker is shown to catch what it claims to catch.
"""

from __future__ import annotations

import re

import pytest

from tests.ci import structure
from tests.ci.conftest import (
    CI_WORKFLOW,
    JENKINSFILE,
    LOCAL_ACTIONS,
    PROMOTE_WORKFLOW,
    WORKFLOW_FILES,
    run_tool,
)
from tests.ci.structure import (
    check_jenkinsfile,
    check_local_action,
    check_workflow,
    ci_sequence,
    compare_sequences,
    load_jenkinsfile,
    load_workflow,
    make_ci_steps,
)

GATE_MISSING = (
    "ci.yml: job '{job}' step {n} (Push the image (git sha and model version tags)) calls "
    "`make push-image` without `make gate` before it (an earlier step of its job or a step of "
    "a job it `needs`)"
)


def _step_index(data: dict, job: str, target: str) -> int:
    for index, step in enumerate(data["jobs"][job]["steps"]):
        if re.search(rf"\bmake {re.escape(target)}\b", step.get("run", "")):
            return index
    raise AssertionError(f"job {job} has no `make {target}` step")


def _drop_step(data: dict, job: str, target: str) -> dict:
    del data["jobs"][job]["steps"][_step_index(data, job, target)]
    return data


# ------------------------------------------------------------------------ the real files pass
@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_follows_every_rule(workflow, makefile):
    assert check_workflow(workflow, makefile) == []


def test_jenkinsfile_follows_every_rule(makefile):
    assert check_jenkinsfile(JENKINSFILE, makefile) == []


@pytest.mark.parametrize("action", LOCAL_ACTIONS, ids=lambda p: p.parent.name)
def test_local_actions_pin_what_they_use(action):
    assert check_local_action(action) == []


def test_make_ci_runs_what_github_actions_runs_before_publishing(makefile):
    steps = make_ci_steps(makefile)
    assert steps, "the Makefile defines no CI_STEPS"
    workflow = load_workflow(CI_WORKFLOW)
    assert compare_sequences("ci.yml", steps, ci_sequence(workflow.targets())) == []
    for job_id, job in workflow.jobs.items():  # and each job in the same relative order
        ours = ci_sequence(t for step in job.steps for t in step.targets)
        assert ours == [t for t in steps if t in ours], f"job {job_id}: {ours} vs make ci {steps}"


def test_make_ci_runs_what_jenkins_runs_before_publishing(makefile):
    steps = make_ci_steps(makefile)
    jenkins = ci_sequence(load_jenkinsfile(JENKINSFILE).targets())
    assert compare_sequences("Jenkinsfile", steps, jenkins) == []


def test_make_ci_publishes_nothing(makefile):
    steps = make_ci_steps(makefile)
    published = structure.PUBLISH_TARGETS | structure.REGISTRY_MOVES
    assert not set(steps) & published, steps
    for target in ("gate", "image-test", "register"):
        assert target in steps


def test_make_ci_recipe_runs_ci_steps_in_order(makefile):
    # -n prints the sub-makes' commands without running them; the loop's own line runs,
    # because it calls $(MAKE), and announces each step.
    proc = run_tool("make", "-n", "--no-print-directory", "ci")
    assert proc.returncode == 0, proc.stderr
    assert re.findall(r"^==> make (\S+)$", proc.stdout, re.M) == make_ci_steps(makefile)


def test_the_promote_workflow_runs_only_registry_moves_and_the_retag():
    targets = load_workflow(PROMOTE_WORKFLOW).targets()
    assert targets == ["env", "promote", "rollback", "retag-image", "deploy-champion"]


# ------------------------------------------------------------- broken copies of ci.yml fail
def test_the_unmodified_copy_passes(ci_yaml, write_yaml, called_targets):
    assert check_workflow(write_yaml(ci_yaml), called_targets) == []


def test_push_without_the_gate_is_caught(ci_yaml, write_yaml, called_targets):
    # The release no longer waits for the pipeline job and no longer re-checks the gate.
    ci_yaml["jobs"]["release"]["needs"] = ["checks"]
    _drop_step(ci_yaml, "release", "gate")
    push = _step_index(ci_yaml, "release", "push-image") + 1
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert problems == [GATE_MISSING.format(job="release", n=push)]


def test_deploying_the_builds_own_image_is_caught(ci_yaml, write_yaml, called_targets):
    """The release job ended with `make deploy`: every push to main put the new @challenger
    in production, past the promotion a person decides."""
    release = ci_yaml["jobs"]["release"]["steps"]
    release.append({"name": "Deploy to Kubernetes", "run": "make deploy"})
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert (
        f"ci.yml: job 'release' step {len(release)} (Deploy to Kubernetes) calls `make deploy`, "
        "which deploys the build's image, the new @challenger, past promotion"
    ) in problems


def test_push_in_a_job_that_needs_neither_gate_nor_smoke_test_is_caught(
    ci_yaml, write_yaml, called_targets
):
    # The push moves to its own job that only waits for lint and tests.
    release = ci_yaml["jobs"]["release"]
    push_step = release["steps"].pop(_step_index(ci_yaml, "release", "push-image"))
    ci_yaml["jobs"]["publish"] = {
        "needs": ["checks"],
        "if": release["if"],
        "runs-on": "ubuntu-latest",
        "permissions": {"contents": "read", "packages": "write"},
        "steps": [{"uses": "actions/checkout@v5"}, push_step],
    }
    release["permissions"] = {"contents": "read"}
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert problems == [
        GATE_MISSING.format(job="publish", n=2),
        "ci.yml: job 'publish' step 2 (Push the image (git sha and model version tags)) calls "
        "`make push-image` without `make image-test` before it (an earlier step of its job or "
        "a step of a job it `needs`)",
    ]


def test_push_before_the_smoke_test_is_caught(ci_yaml, write_yaml, called_targets):
    steps = ci_yaml["jobs"]["release"]["steps"]
    push = steps.pop(_step_index(ci_yaml, "release", "push-image"))
    steps.insert(_step_index(ci_yaml, "release", "image-test"), push)
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert len(problems) == 1
    assert "calls `make push-image` without `make image-test` before it" in problems[0]


def test_push_not_limited_to_main_is_caught(ci_yaml, write_yaml, called_targets):
    del ci_yaml["jobs"]["release"]["if"]
    push = _step_index(ci_yaml, "release", "push-image") + 1
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    unguarded = [p for p in problems if "is not limited to main" in p]
    assert problems == unguarded
    assert [re.search(r"`make ([\w-]+)`", p).group(1) for p in problems] == [
        "register",
        "ci-dvc-push",
        "push-image",
    ]
    assert problems[-1] == (
        f"ci.yml: job 'release' step {push} (Push the image (git sha and model version tags)) "
        "calls `make push-image` but is not limited to main "
        "(needs `if: github.ref == 'refs/heads/main'` on the step or its job)"
    )


@pytest.mark.parametrize(
    "condition",
    [
        "github.ref == 'refs/heads/main' || github.event_name == 'pull_request'",
        "!(github.ref == 'refs/heads/main')",
        "github.event_name == 'push'",
    ],
)
def test_a_condition_that_lets_other_branches_push_is_caught(
    condition, ci_yaml, write_yaml, called_targets
):
    ci_yaml["jobs"]["release"]["if"] = condition
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert any("calls `make push-image` but is not limited to main" in p for p in problems)


def test_a_step_level_main_condition_is_enough(ci_yaml, write_yaml, called_targets):
    release = ci_yaml["jobs"]["release"]
    condition = release.pop("if")
    for step in release["steps"]:
        step["if"] = condition
    assert check_workflow(write_yaml(ci_yaml), called_targets) == []


def test_push_that_runs_after_a_failure_is_caught(ci_yaml, write_yaml, called_targets):
    ci_yaml["jobs"]["release"]["if"] = "always() && github.ref == 'refs/heads/main'"
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert problems == [
        "ci.yml: job 'release' has `if: always() && github.ref == 'refs/heads/main'`, so "
        f"`make push-image` could run after {names} failed"
        for names in ("`make gate`", "`make image-test`")
    ]


def test_a_gate_that_may_fail_is_caught(ci_yaml, write_yaml, called_targets):
    ci_yaml["jobs"]["pipeline"]["continue-on-error"] = True
    gates = {job: _step_index(ci_yaml, job, "gate") for job in ("release", "pipeline")}
    ci_yaml["jobs"]["release"]["steps"][gates["release"]]["continue-on-error"] = True
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert problems == [
        f"ci.yml: job '{job}' step {n + 1} (Gate) (`make gate`) has continue-on-error, so "
        "`make push-image` would run after it failed"
        for job, n in gates.items()
    ]


def test_an_unknown_target_is_caught(ci_yaml, write_yaml, called_targets):
    smoke = _step_index(ci_yaml, "release", "image-test")
    ci_yaml["jobs"]["release"]["steps"][smoke]["run"] = "make image-smoke"
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert problems[0].startswith(
        f"ci.yml: job 'release' step {smoke + 1} (Smoke-test the image) calls `make image-smoke`, "
    )
    assert problems[0].endswith("not a Makefile target")
    # ... and without the smoke test the push has lost a prerequisite too
    assert "without `make image-test` before it" in problems[1]


def test_logic_in_a_step_is_caught(ci_yaml, write_yaml, called_targets):
    gate = _step_index(ci_yaml, "pipeline", "gate")
    ci_yaml["jobs"]["pipeline"]["steps"][gate]["run"] = "make gate || true"
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert problems == [
        f"ci.yml: job 'pipeline' step {gate + 1} (Gate) runs 'make gate || true'; a CI step is one "
        "`make <target>` call"
    ]


def test_write_permissions_where_nothing_needs_them_are_caught(ci_yaml, write_yaml, called_targets):
    ci_yaml["permissions"] = {"contents": "read", "packages": "write"}
    ci_yaml["jobs"]["pipeline"]["permissions"] = {"contents": "read", "pull-requests": "write"}
    problems = check_workflow(write_yaml(ci_yaml), called_targets)
    assert problems == [
        "ci.yml: top-level `permissions` is {'contents': 'read', 'packages': 'write'}; it must "
        "grant read access only (e.g. contents: read)",
        "ci.yml: job 'pipeline' has `pull-requests: write` but calls none of ci-comment",
    ]


@pytest.mark.parametrize("trigger", ["pull_request_target", "workflow_run"])
def test_a_privileged_trigger_is_caught(trigger, ci_yaml, write_yaml, called_targets):
    ci_yaml[True][trigger] = {"types": ["opened"]}
    assert check_workflow(write_yaml(ci_yaml), called_targets) == [
        f"ci.yml: runs on `{trigger}`, which gives a fork's pull request the repository's "
        "secrets; use `pull_request`"
    ]


def test_an_unpinned_action_is_caught(ci_yaml, write_yaml, called_targets):
    ci_yaml["jobs"]["checks"]["steps"][0]["uses"] = "actions/checkout@main"
    assert check_workflow(write_yaml(ci_yaml), called_targets) == [
        "ci.yml: job 'checks' step 1 (actions/checkout@main) uses 'actions/checkout@main'; "
        "pin an action to a major version (@v4) or a commit sha"
    ]


def test_make_ci_drift_is_caught(ci_yaml, write_yaml, makefile):
    # A new step in the workflow that `make ci` does not run.
    steps = ci_yaml["jobs"]["pipeline"]["steps"]
    steps.insert(_step_index(ci_yaml, "pipeline", "gate"), {"run": "make bench-pipeline"})
    actual = ci_sequence(load_workflow(write_yaml(ci_yaml)).targets())
    expected = make_ci_steps(makefile)
    assert compare_sequences("ci.yml", expected, actual) == [
        f"ci.yml: runs {' '.join(actual)} but make ci runs {' '.join(expected)}; they must call "
        "the same targets in the same order"
    ]
    assert "bench-pipeline" in actual


# -------------------------------------------------------------- broken copies of promote.yml
def test_retag_without_a_registry_move_is_caught(promote_yaml, write_yaml, called_targets):
    steps = promote_yaml["jobs"]["promote"]["steps"]
    steps[:] = [s for s in steps if not re.search(r"make (promote|rollback)\b", s.get("run", ""))]
    problems = check_workflow(write_yaml(promote_yaml, "promote.yml"), called_targets)
    assert problems == [
        "promote.yml: job 'promote' step 4 (Tag the champion's image as champion) calls "
        "`make retag-image` without `make promote` or `make rollback` before it (an earlier "
        "step of its job or a step of a job it `needs`)"
    ]


def test_promote_from_another_branch_is_caught(promote_yaml, write_yaml, called_targets):
    del promote_yaml["jobs"]["promote"]["if"]
    problems = check_workflow(write_yaml(promote_yaml, "promote.yml"), called_targets)
    assert [re.search(r"`make ([\w-]+)`", p).group(1) for p in problems] == [
        "promote",
        "rollback",
        "retag-image",
    ]


# ------------------------------------------------------------ broken copies of the Jenkinsfile
def _stage_block(text: str, name: str) -> str:
    start = text.index(f"        stage('{name}') {{")
    end = text.index("\n        }\n", start) + len("\n        }\n")
    return text[start:end]


def test_the_unmodified_jenkinsfile_copy_passes(jenkins_copy, called_targets):
    assert check_jenkinsfile(jenkins_copy(JENKINSFILE.read_text()), called_targets) == []


def test_jenkins_push_before_the_gate_is_caught(jenkins_copy, called_targets):
    text = JENKINSFILE.read_text()
    publish = _stage_block(text, "Publish")
    text = text.replace(publish, "")
    text = text.replace("        stage('Gate') {", publish + "        stage('Gate') {")
    problems = check_jenkinsfile(jenkins_copy(text), called_targets)
    assert problems == [
        f"Jenkinsfile: stage 'Publish' calls `make push-image` without {names} in a stage "
        "before it (stages under `parallel` and steps in `post` do not count)"
        for names in ("`make gate`", "`make image-test`")
    ]


def test_jenkins_push_in_parallel_with_the_smoke_test_is_caught(jenkins_copy, called_targets):
    text = JENKINSFILE.read_text()
    smoke = _stage_block(text, "Smoke test")
    publish = _stage_block(text, "Publish")
    text = text.replace(smoke, "").replace(
        publish,
        "        stage('Ship') {\n            parallel {\n"
        + smoke.replace("\n", "\n    ")
        + publish.replace("\n", "\n    ")
        + "            }\n        }\n",
    )
    problems = check_jenkinsfile(jenkins_copy(text), called_targets)
    assert problems == [
        "Jenkinsfile: stage 'Publish' calls `make push-image` without `make image-test` in a "
        "stage before it (stages under `parallel` and steps in `post` do not count)"
    ]


def test_jenkins_push_not_limited_to_main_is_caught(jenkins_copy, called_targets):
    text = JENKINSFILE.read_text()
    publish = _stage_block(text, "Publish")
    text = text.replace(publish, publish.replace("            when { branch 'main' }\n", ""))
    problems = check_jenkinsfile(jenkins_copy(text), called_targets)
    assert problems == [
        f"Jenkinsfile: stage 'Publish' calls `make {target}` but is not limited to main "
        "(needs `when { branch 'main' }`)"
        for target in ("ci-dvc-push", "push-image")
    ]


def test_jenkins_any_branch_condition_is_caught(jenkins_copy, called_targets):
    text = JENKINSFILE.read_text()
    publish = _stage_block(text, "Publish")
    loose = "            when { anyOf { branch 'main'; changeRequest() } }\n"
    text = text.replace(publish, publish.replace("            when { branch 'main' }\n", loose))
    problems = check_jenkinsfile(jenkins_copy(text), called_targets)
    assert len(problems) == 2
    assert all("is not limited to main" in p for p in problems)


def test_jenkins_push_without_credentials_block_is_caught(jenkins_copy, called_targets):
    text = JENKINSFILE.read_text()
    publish = _stage_block(text, "Publish")
    bare = publish.replace("                        sh 'make push-image'\n", "").replace(
        "            steps {\n", "            steps {\n                sh 'make push-image'\n"
    )
    problems = check_jenkinsfile(jenkins_copy(text.replace(publish, bare)), called_targets)
    assert problems == [
        "Jenkinsfile: stage 'Publish' calls `make push-image` without MLFLOW_TRACKING_PASSWORD, "
        "MLFLOW_TRACKING_USERNAME, REGISTRY_PASSWORD, REGISTRY_USER bound (`withSecrets`)"
    ]


def _strip_bindings(text: str, target: str) -> str:
    """The Jenkinsfile with the `withSecrets` around `sh 'make TARGET'` gone (the step kept)."""
    call = text.index(f"sh 'make {target}'")
    start = text.rindex("withSecrets(", 0, call)
    body = text.index("{\n", start) + 2
    end = text.index("}\n", call) + 2
    return text[:start] + text[body:end].replace("}\n", "") + text[end:]


@pytest.mark.parametrize(
    ("target", "stage", "missing"),
    [
        ("image", "Image", "MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME"),
        ("image-test", "Smoke test", "MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME"),
        ("gate", "Gate", "MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME"),
        ("ci-dvc-pull", "Pipeline", "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_jenkins_make_call_without_the_credentials_it_needs_is_caught(
    target, stage, missing, jenkins_copy, called_targets
):
    """`make image` asks the MLflow registry for the version it labels the image with, and
    `make image-test` rebuilds the image first: without the MLflow login both got an image
    labelled with the ONNX hash, and Publish pushed that one as model-<version>."""
    text = _strip_bindings(JENKINSFILE.read_text(), target)
    problems = check_jenkinsfile(jenkins_copy(text), called_targets)
    assert problems == [
        f"Jenkinsfile: stage '{stage}' calls `make {target}` without {missing} bound "
        "(`withSecrets`)"
    ]


def test_jenkins_credentials_bound_for_a_forks_pull_request_are_caught(
    jenkins_copy, called_targets
):
    """A fork's pull request runs the Pipeline and Gate stages with its own Makefile: a
    `withCredentials` there handed it the DVC remote's keys and the MLflow login."""
    text = JENKINSFILE.read_text()
    gate = _stage_block(text, "Gate")
    exposed = gate.replace("withSecrets(", "withCredentials(")
    text = text.replace(gate, exposed)
    line = text[: text.index("withCredentials(", text.index("stage('Gate')"))].count("\n") + 1
    problems = check_jenkinsfile(jenkins_copy(text), called_targets)
    assert problems == [
        f"Jenkinsfile: line {line} binds credentials outside `if (!env.CHANGE_FORK)`, so a "
        "fork's pull request would get them (use `withSecrets`)"
    ]


def test_the_jenkins_helper_binds_nothing_for_a_fork():
    helper = JENKINSFILE.read_text().split("pipeline {", 1)[0]
    assert "def withSecrets(List bindings, Closure body)" in helper
    assert re.search(
        r"if \(!env\.CHANGE_FORK\) \{\n\s+withCredentials\(bindings\) \{ body\(\) \}\n"
        r"\s+\} else \{\n(?:(?!withCredentials).)*\n\s+\}\n\}",
        helper,
        re.S,
    ), helper


def test_jenkins_gate_that_may_fail_is_caught(jenkins_copy, called_targets):
    text = JENKINSFILE.read_text().replace(
        "                    sh 'make gate'\n",
        "                    catchError(buildResult: 'UNSTABLE') { sh 'make gate' }\n",
    )
    problems = check_jenkinsfile(jenkins_copy(text), called_targets)
    assert problems == [
        "Jenkinsfile: stage 'Gate' uses `catchError`, so `make push-image` could run after "
        "`make gate` failed"
    ]


def test_jenkins_push_in_a_post_block_is_caught(jenkins_copy, called_targets):
    text = JENKINSFILE.read_text().replace(
        "                always {\n                    sh 'make ci-report'\n",
        "                always {\n                    sh 'make ci-report'\n"
        "                    sh 'make push-image'\n",
    )
    problems = check_jenkinsfile(jenkins_copy(text), called_targets)
    assert (
        "Jenkinsfile: stage 'Gate' calls `make push-image` but is not limited to main"
        in (problems[0])
    )
    assert "Jenkinsfile: stage 'Gate' calls `make push-image` in a `post` block" in problems[1]


def test_jenkins_drift_from_make_ci_is_caught(makefile):
    text = JENKINSFILE.read_text()
    lint, test = _stage_block(text, "Lint"), _stage_block(text, "Test")
    swapped = text.replace(lint + test, test + lint)
    assert swapped != text
    jenkins = ci_sequence(structure.parse_jenkinsfile(swapped).targets())
    problems = compare_sequences("Jenkinsfile", make_ci_steps(makefile), jenkins)
    assert len(problems) == 1
    assert problems[0].startswith("Jenkinsfile: runs env test lint ")


# ------------------------------------------------------------------------------ the parsers
@pytest.mark.parametrize(
    ("script", "targets", "thin"),
    [
        ("make gate", ["gate"], True),
        ("make test PYTEST_ARGS=--junitxml=test-artifacts/junit.xml", ["test"], True),
        ('make promote VERSION="$PROMOTE_VERSION"', ["promote"], True),
        ("make gate || true", ["gate"], False),
        ("make lint test", ["lint", "test"], False),
        ("make -C sub gate", ["sub", "gate"], False),
        ("cd x && make image", ["image"], False),
        ("echo hello", [], False),
        ("cmake build", [], False),
    ],
)
def test_make_calls_are_read_from_a_step(script, targets, thin):
    assert structure.make_targets_in(script) == targets
    assert structure.is_thin(script) is thin


def test_comments_and_strings_do_not_fool_the_jenkinsfile_reader(jenkins_copy):
    path = jenkins_copy(
        "pipeline {\n"
        "  // stage('Hidden') { steps { sh 'make push-image' } }\n"
        "  parameters { string(name: 'X', description: 'post { a } and stage(\"y\") {') }\n"
        "  stages {\n"
        "    stage('Outer') {\n"
        "      when { branch 'main' }\n"
        "      stages {\n"
        "        stage('Inner') { steps { sh \"make gate\" } }\n"
        "      }\n"
        "    }\n"
        "  }\n"
        "}\n"
    )
    jenkins = load_jenkinsfile(path)
    assert [s.name for s in jenkins.stages] == ["Outer", "Inner"]
    assert [(c.stage.name, c.targets) for c in jenkins.calls] == [("Inner", ["gate"])]
    assert not jenkins.inside("post", jenkins.calls[0].offset)
    assert structure._stage_on_main(jenkins.calls[0].stage)  # inherited from 'Outer'
