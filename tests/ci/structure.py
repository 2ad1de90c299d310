"""Read the CI definitions and check the rules that keep them honest.

GitHub Actions (``.github/workflows/*.yml``), the ``Jenkinsfile`` and ``make ci`` must run the
same ``make`` targets in the same order, and nothing may be published from a build that did not
pass the gate and the image smoke test, or from a branch other than ``main``. Each ``check_*``
function returns a list of problems (empty when the file is fine), one sentence each, naming the
file, the job/stage and the rule, so the tests can assert both that the real files pass and that
a deliberately broken copy is caught.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

#: Targets that publish something outside the build: never run by ``make ci``.
PUBLISH_TARGETS = frozenset(
    {"push-image", "retag-image", "ci-dvc-push", "ci-comment", "deploy", "deploy-champion"}
)
#: Targets that move registry aliases by hand: the promote workflow / Jenkins parameters only.
REGISTRY_MOVES = frozenset({"promote", "rollback"})
#: Targets that may only run for the ``main`` branch.
MAIN_ONLY = frozenset({"register", "push-image", "retag-image", "ci-dvc-push"}) | REGISTRY_MOVES
#: A target and what must have succeeded, earlier in the same build, before it may run.
PREREQUISITES: dict[str, tuple[frozenset[str], ...]] = {
    # each tuple item is a set of alternatives: at least one of them must come first
    "push-image": (frozenset({"gate"}), frozenset({"image-test"})),
    "retag-image": (REGISTRY_MOVES,),
    # Production runs the champion: its image after a promotion or rollback retagged it.
    "deploy-champion": (frozenset({"retag-image"}),),
}
#: Targets no CI definition calls: ``deploy`` rolls out the build's own image, which holds the
#: new @challenger (promotion, a person's decision, is what deploys).
NEVER_IN_CI = {"deploy": "deploys the build's image, the new @challenger, past promotion"}

_MLFLOW = frozenset({"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"})
_S3 = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
_REGISTRY = frozenset({"REGISTRY_USER", "REGISTRY_PASSWORD"})
#: The credential variables a target reads, from its recipe in the Makefile: the MLflow server
#: for anything that logs runs or reads the registry (``image`` asks it for the model version
#: it labels the image with, ``image-test`` rebuilds the image first, ``push-image`` tags
#: ``model-<version>``, ``retag-image`` looks up @champion), the S3 keys for the DVC remote and
#: the log store, the container registry's login for pushes and pulls.
CREDENTIALS_NEEDED: dict[str, frozenset[str]] = {
    "ci-dvc-pull": _S3,
    "ci-dvc-push": _S3,
    "monitor-fetch": _S3,
    "repro": _MLFLOW,
    "gate": _MLFLOW,
    "register": _MLFLOW,
    "promote": _MLFLOW,
    "rollback": _MLFLOW,
    "monitor": _MLFLOW,
    "retrain": _MLFLOW,
    "image": _MLFLOW,
    "image-test": _MLFLOW,
    "push-image": _MLFLOW | _REGISTRY,
    "retag-image": _MLFLOW | _REGISTRY,
    "deploy-champion": _REGISTRY | {"KUBECONFIG"},
}
#: The Jenkinsfiles' steps that bind credentials: ``withSecrets``, their own helper, binds them
#: with ``withCredentials`` only for a build that is not a fork's pull request.
_BINDERS = ("withSecrets", "withCredentials")
_NOT_A_FORK = re.compile(r"\bif\s*\(\s*!\s*env\.CHANGE_FORK\s*\)\s*\{")
_BOUND_VARIABLE = re.compile(r"\b(?:usernameVariable|passwordVariable|variable)\s*:\s*'([^']+)'")

MAIN_REF = "github.ref == 'refs/heads/main'"
#: A status function in an ``if:`` lets a job or step run after something it depends on failed.
_STATUS_OVERRIDE = re.compile(r"\b(always|failure|cancelled)\s*\(")
#: One ``make`` call: the target, then only ``NAME=value`` arguments.
_THIN_CALL = re.compile(r"make\s+[A-Za-z0-9_.-]+(?:\s+[A-Za-z_][A-Za-z0-9_]*=\S*)*")
_MAKE_WORD = re.compile(r"(?<![\w./$-])make\s+([^;&|\n]*)")


def make_targets_in(script: str) -> list[str]:
    """The make targets a shell snippet calls, in order (``make a b`` gives ``a``, ``b``)."""
    targets = []
    for match in _MAKE_WORD.finditer(script):
        for word in match.group(1).split():
            if word.startswith(("-", "#")) or "=" in word:
                continue
            targets.append(word.strip("'\""))
    return targets


def is_thin(script: str) -> bool:
    """True when a CI step is exactly one ``make <target> [VAR=value ...]`` call."""
    return _THIN_CALL.fullmatch(script.strip()) is not None


def dedupe(items: Iterable[str]) -> list[str]:
    """The items in order of first appearance."""
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def ci_sequence(targets: Iterable[str]) -> list[str]:
    """What ``make ci`` must run for a CI definition calling ``targets``: everything but the
    publishing steps and the manual registry moves, each target once, in first-call order."""
    return dedupe(t for t in targets if t not in PUBLISH_TARGETS | REGISTRY_MOVES)


def compare_sequences(name: str, expected: list[str], actual: list[str]) -> list[str]:
    if expected == actual:
        return []
    return [
        f"{name}: runs {' '.join(actual) or '(nothing)'} but make ci runs "
        f"{' '.join(expected) or '(nothing)'}; they must call the same targets in the same order"
    ]


# ------------------------------------------------------------------------------------ Makefile
def without_make_state(environ: Mapping[str, str]) -> dict[str, str]:
    """An environment without the flags a parent `make` passes down (MAKEFLAGS, MAKELEVEL...)."""
    return {k: v for k, v in environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


@dataclass(frozen=True)
class Makefile:
    targets: frozenset[str]
    variables: dict[str, str] = field(repr=False)


def read_makefile(root: Path) -> Makefile:
    """Targets and simply-expanded variables from GNU make's own database (``make -pRrq``)."""
    proc = subprocess.run(
        ["make", "-pRrq", "-C", str(root), "--no-print-directory"],
        env=without_make_state(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "# Files" not in proc.stdout:
        raise RuntimeError(f"make -pRrq printed no database:\n{proc.stderr[-2000:]}")
    targets: set[str] = set()
    variables: dict[str, str] = {}
    section = origin = ""
    not_a_target = False
    entry: tuple[str, bool] | None = None  # (name, defined) of the Files entry being read
    for line in [*proc.stdout.splitlines(), ""]:
        if line.startswith("# ") and line[2:] in ("Variables", "Files", "Directories"):
            section = line[2:]
            continue
        if section == "Variables":
            var = re.match(r"([A-Za-z_][A-Za-z0-9_]*) :?= (.*)$", line)
            if var and origin.startswith("# makefile"):
                variables[var.group(1)] = var.group(2)
            origin = line
        elif section == "Files":
            if line == "# Not a target:":
                not_a_target = True
                continue
            header = re.match(r"([^\s#:=][^:=]*?):(?!=)(.*)$", line)
            if header:
                # A name that is only listed in .PHONY has neither prerequisites nor a recipe:
                # `make` would do nothing and succeed, so it does not count as a target.
                entry = None if not_a_target else (header.group(1), bool(header.group(2).strip()))
                not_a_target = False
            elif entry and line.startswith("#  recipe to execute"):
                entry = (entry[0], True)
            elif entry and not line.strip():
                name, defined = entry
                if defined and not name.startswith("."):
                    targets.add(name)
                entry = None
    return Makefile(frozenset(targets), variables)


def make_ci_steps(makefile: Makefile) -> list[str]:
    """The targets ``make ci`` runs, in order (the ``CI_STEPS`` variable)."""
    return makefile.variables.get("CI_STEPS", "").split()


# ------------------------------------------------------------------------------ GitHub Actions
@dataclass
class Step:
    job: str
    index: int
    name: str
    run: str | None
    uses: str | None
    condition: str
    continue_on_error: bool

    @property
    def targets(self) -> list[str]:
        return make_targets_in(self.run) if self.run else []

    def __str__(self) -> str:
        return f"job '{self.job}' step {self.index + 1} ({self.name})"


@dataclass
class Job:
    id: str
    needs: list[str]
    condition: str
    continue_on_error: bool
    permissions: dict[str, str] | str | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class Workflow:
    path: Path
    jobs: dict[str, Job]
    permissions: dict[str, str] | str | None = None

    def ancestors(self, job_id: str) -> list[str]:
        """Every job ``job_id`` needs, directly or through other jobs."""
        found: list[str] = []
        stack = list(self.jobs[job_id].needs)
        while stack:
            current = stack.pop()
            if current in found or current not in self.jobs:
                continue
            found.append(current)
            stack.extend(self.jobs[current].needs)
        return found

    def job_order(self) -> list[str]:
        """Jobs in an order that respects ``needs`` (ties keep the file's order)."""
        done: list[str] = []
        pending = list(self.jobs)
        while pending:
            ready = [j for j in pending if all(n in done for n in self.jobs[j].needs)]
            if not ready:  # a cycle or an unknown job: keep file order for the rest
                ready = pending[:1]
            done.append(ready[0])
            pending.remove(ready[0])
        return done

    def steps_in_order(self) -> list[Step]:
        return [step for job in self.job_order() for step in self.jobs[job].steps]

    def targets(self) -> list[str]:
        return [t for step in self.steps_in_order() for t in step.targets]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def load_workflow(path: Path) -> Workflow:
    raw = yaml.safe_load(path.read_text())
    jobs: dict[str, Job] = {}
    for job_id, spec in (raw.get("jobs") or {}).items():
        job = Job(
            id=job_id,
            needs=_as_list(spec.get("needs")),
            condition=_text(spec.get("if")),
            continue_on_error=spec.get("continue-on-error", False) is not False,
            permissions=spec.get("permissions"),
        )
        for index, step in enumerate(spec.get("steps") or []):
            job.steps.append(
                Step(
                    job=job_id,
                    index=index,
                    name=step.get("name") or step.get("uses") or _text(step.get("run")),
                    run=step.get("run"),
                    uses=step.get("uses"),
                    condition=_text(step.get("if")),
                    continue_on_error=step.get("continue-on-error", False) is not False,
                )
            )
        jobs[job_id] = job
    return Workflow(path, jobs, raw.get("permissions"))


def _limited_to_main(condition: str) -> bool:
    """True when an ``if:`` can only hold on main: it requires the ref and loosens nothing."""
    normal = re.sub(r"\s+", " ", condition.replace('"', "'"))
    return MAIN_REF in normal and "||" not in normal and "!(" not in normal.replace("! (", "!(")


#: A third-party action pinned to a major version (or a release), or to a full commit sha.
_PINNED = re.compile(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})")
#: Which write scope a job may hold, and the targets that need it.
WRITE_SCOPES = {
    "packages": frozenset({"push-image", "retag-image"}),
    "pull-requests": frozenset({"ci-comment"}),
}


def check_uses(where: str, uses: str | None) -> list[str]:
    if uses is None or uses.startswith("./") or _PINNED.fullmatch(uses):
        return []
    return [f"{where} uses {uses!r}; pin an action to a major version (@v4) or a commit sha"]


def check_local_action(path: Path) -> list[str]:
    """A composite action under .github/actions: the actions it uses are pinned too."""
    raw = yaml.safe_load(path.read_text())
    where = f"{path.parent.name}/{path.name}"
    steps = (raw.get("runs") or {}).get("steps") or []
    problems = []
    for index, step in enumerate(steps):
        problems.extend(check_uses(f"{where} step {index + 1}", step.get("uses")))
    return problems


def check_permissions(workflow: Workflow) -> list[str]:
    """Least privilege: read-only by default; a write scope only on the job that needs it."""
    where = workflow.path.name
    problems = []
    top = workflow.permissions
    if not isinstance(top, dict) or any(v not in ("read", "none") for v in top.values()):
        problems.append(
            f"{where}: top-level `permissions` is {top!r}; it must grant read access only "
            "(e.g. contents: read)"
        )
    for job in workflow.jobs.values():
        perms = job.permissions
        if perms is None:
            continue
        if not isinstance(perms, dict):
            problems.append(f"{where}: job '{job.id}' has `permissions: {perms}`; list scopes")
            continue
        targets = {t for step in job.steps for t in step.targets}
        for scope, level in perms.items():
            if level != "write":
                continue
            needed_by = WRITE_SCOPES.get(scope, frozenset())
            if not needed_by & targets:
                problems.append(
                    f"{where}: job '{job.id}' has `{scope}: write` but calls none of "
                    f"{', '.join(sorted(needed_by)) or '(no target needs it)'}"
                )
    return problems


#: Triggers that run with the base repository's secrets and write token whatever the event's
#: source: with a checkout of a fork's code they hand it both.
PRIVILEGED_TRIGGERS = ("pull_request_target", "workflow_run")


def check_triggers(path: Path) -> list[str]:
    """No workflow runs on a privileged trigger: a fork's PR gets secrets only that way."""
    raw = yaml.safe_load(path.read_text())
    triggers = raw.get("on", raw.get(True)) or {}  # YAML 1.1 reads the key `on` as True
    names = [triggers] if isinstance(triggers, str) else list(triggers)
    return [
        f"{path.name}: runs on `{name}`, which gives a fork's pull request the repository's "
        "secrets; use `pull_request`"
        for name in names
        if name in PRIVILEGED_TRIGGERS
    ]


def check_workflow(path: Path, makefile: Makefile) -> list[str]:
    """Every rule for one GitHub Actions workflow; an empty list when it follows them all."""
    workflow = load_workflow(path)
    where = path.name
    problems: list[str] = check_triggers(path) + check_permissions(workflow)
    for step in workflow.steps_in_order():
        problems.extend(check_uses(f"{where}: {step}", step.uses))
    for step in workflow.steps_in_order():
        if step.run is not None and not is_thin(step.run):
            problems.append(
                f"{where}: {step} runs {step.run.strip()!r}; a CI step is one `make <target>` call"
            )
        for target in step.targets:
            if target not in makefile.targets:
                problems.append(f"{where}: {step} calls `make {target}`, not a Makefile target")
            if target in NEVER_IN_CI:
                problems.append(
                    f"{where}: {step} calls `make {target}`, which {NEVER_IN_CI[target]}"
                )
    for step in workflow.steps_in_order():
        job = workflow.jobs[step.job]
        for target in step.targets:
            if target in MAIN_ONLY and not (
                _limited_to_main(step.condition) or _limited_to_main(job.condition)
            ):
                problems.append(
                    f"{where}: {step} calls `make {target}` but is not limited to main "
                    f"(needs `if: {MAIN_REF}` on the step or its job)"
                )
            for alternatives in PREREQUISITES.get(target, ()):
                problems.extend(_check_prerequisite(workflow, step, target, alternatives))
    return problems


def _check_prerequisite(
    workflow: Workflow, step: Step, target: str, alternatives: frozenset[str]
) -> list[str]:
    where = workflow.path.name
    names = " or ".join(f"`make {a}`" for a in sorted(alternatives))
    job = workflow.jobs[step.job]
    ancestors = workflow.ancestors(step.job)
    earlier = job.steps[: step.index] + [s for a in ancestors for s in workflow.jobs[a].steps]
    providers = [s for s in earlier if alternatives & set(s.targets)]
    if not providers:
        return [
            f"{where}: {step} calls `make {target}` without {names} before it "
            "(an earlier step of its job or a step of a job it `needs`)"
        ]
    problems = []
    for provider in providers:
        if provider.continue_on_error or workflow.jobs[provider.job].continue_on_error:
            problems.append(
                f"{where}: {provider} ({names}) has continue-on-error, so `make {target}` "
                "would run after it failed"
            )
    overridden = [(str(step), step.condition), (f"job '{step.job}'", job.condition)]
    overridden += [(f"job '{a}'", workflow.jobs[a].condition) for a in ancestors]
    for label, condition in overridden:
        if _STATUS_OVERRIDE.search(condition):
            problems.append(
                f"{where}: {label} has `if: {condition}`, so `make {target}` could run after "
                f"{names} failed"
            )
    return problems


# ----------------------------------------------------------------------------------- Jenkinsfile
@dataclass
class Stage:
    name: str
    start: int  # offset of the opening brace of the stage body
    end: int  # offset of its closing brace
    parents: list[Stage]
    own_code: str = ""  # the body with nested stages and string contents blanked out
    own_text: str = ""  # the same span with string contents kept

    def __str__(self) -> str:
        return f"stage '{self.name}'"


@dataclass
class ShCall:
    script: str
    offset: int
    stage: Stage | None

    @property
    def targets(self) -> list[str]:
        return make_targets_in(self.script)

    @property
    def label(self) -> str:
        return str(self.stage) if self.stage else "a step outside any stage"


@dataclass
class Jenkinsfile:
    text: str  # comments blanked out, offsets kept
    code: str  # comments and string contents blanked out, offsets kept
    stages: list[Stage]
    calls: list[ShCall]

    def targets(self) -> list[str]:
        return [t for call in self.calls for t in call.targets]

    def inside(self, keyword: str, offset: int) -> bool:
        """True when ``offset`` lies in the braces after ``keyword`` (``withCredentials([..]) {``,
        ``parallel {``, ``post {``); the keyword in a string or a comment does not count."""
        for match in re.finditer(rf"\b{keyword}\b", self.code):
            brace = self.code.find("{", match.end())
            if brace >= 0 and brace < offset < _matching_brace(self.code, brace):
                return True
        return False

    def bound_variables(self, offset: int) -> set[str]:
        """The credential variables bound around ``offset``: the ``usernameVariable``,
        ``passwordVariable`` and ``variable`` of every enclosing ``withSecrets([...]) {`` or
        ``withCredentials([...]) {``."""
        bound: set[str] = set()
        for keyword in _BINDERS:
            for match in re.finditer(rf"\b{keyword}\b", self.code):
                brace = self.code.find("{", match.end())
                if brace >= 0 and brace < offset < _matching_brace(self.code, brace):
                    bound |= set(_BOUND_VARIABLE.findall(self.text[match.end() : brace]))
        return bound

    def unguarded_bindings(self) -> list[int]:
        """Offsets of the ``withCredentials`` calls not inside ``if (!env.CHANGE_FORK) {``."""
        guards = [
            (m.end() - 1, _matching_brace(self.code, m.end() - 1))
            for m in _NOT_A_FORK.finditer(self.code)
        ]
        return [
            m.start()
            for m in re.finditer(r"\bwithCredentials\b", self.code)
            if not any(lo < m.start() < hi for lo, hi in guards)
        ]


_QUOTES = ("'''", '"""', "'", '"')


def _mask(source: str) -> tuple[str, str]:
    """Groovy source with comments blanked, and with comments and string contents blanked.

    Both keep every offset and newline, so a position found in one is valid in the other.
    """
    text, code = list(source), list(source)
    i = 0
    while i < len(source):
        quote = next((q for q in _QUOTES if source.startswith(q, i)), "")
        if quote:
            j = i + len(quote)
            while j < len(source) and not source.startswith(quote, j):
                j += 2 if source[j] == "\\" else 1
            for k in range(i + len(quote), min(j, len(source))):
                if code[k] != "\n":
                    code[k] = " "
            i = j + len(quote)
        elif source.startswith(("//", "/*"), i):
            if source[i + 1] == "/":
                stop = source.find("\n", i)
                stop = len(source) if stop < 0 else stop
            else:
                stop = source.find("*/", i)
                stop = len(source) if stop < 0 else stop + 2
            for k in range(i, stop):
                if text[k] != "\n":
                    text[k] = code[k] = " "
            i = stop
        else:
            i += 1
    return "".join(text), "".join(code)


def _matching_brace(code: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(code)):
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced braces from offset {open_at}")


_STAGE = re.compile(r"\bstage\s*\(\s*(['\"])(.+?)\1\s*\)\s*\{")
_SH = re.compile(r"\bsh\s*\(?\s*(?:script\s*:\s*)?('''|\"\"\"|'|\")(.*?)\1", re.DOTALL)


def load_jenkinsfile(path: Path) -> Jenkinsfile:
    return parse_jenkinsfile(path.read_text())


def parse_jenkinsfile(source: str) -> Jenkinsfile:
    """Stages (nested ones too) and ``sh`` steps, each step tied to its innermost stage."""
    text, code = _mask(source)
    stages: list[Stage] = []
    for match in _STAGE.finditer(text):
        if code[match.start()] == " ":  # the word `stage` inside a string
            continue
        start = match.end() - 1
        end = _matching_brace(code, start)
        parents = [s for s in stages if s.start < start and end < s.end]
        stages.append(Stage(match.group(2), start, end, parents))
    for stage in stages:
        keep = [True] * (stage.end + 1 - stage.start)
        for inner in stages:
            if stage in inner.parents:
                lo = text.rfind("stage", stage.start, inner.start)
                for k in range(lo - stage.start, inner.end + 1 - stage.start):
                    keep[k] = False
        span = range(stage.start, stage.end + 1)
        stage.own_code = "".join(code[k] if keep[k - stage.start] else " " for k in span)
        stage.own_text = "".join(text[k] if keep[k - stage.start] else " " for k in span)
    calls = []
    for match in _SH.finditer(text):
        if code[match.start()] == " ":
            continue
        holders = [s for s in stages if s.start < match.start() < s.end]
        innermost = max(holders, key=lambda s: s.start) if holders else None
        calls.append(ShCall(match.group(2), match.start(), innermost))
    return Jenkinsfile(text, code, stages, calls)


def _when_block(stage: Stage) -> str:
    found = re.search(r"\bwhen\s*\{", stage.own_code)
    if not found:
        return ""
    start = found.end() - 1
    return stage.own_text[start : _matching_brace(stage.own_code, start) + 1]


def _stage_on_main(stage: Stage) -> bool:
    """True when the stage, or a stage it is nested in, runs only for the main branch."""
    for candidate in [stage, *stage.parents]:
        when = _when_block(candidate)
        on_main = re.search(r"\bbranch\s*\(?\s*['\"]main['\"]", when) or re.search(
            # a plain Pipeline job has no BRANCH_NAME (its SCM names the branch): main
            r"\(\s*env\.BRANCH_NAME\s*\?:\s*'main'\s*\)\s*==\s*'main'",
            when,
        )
        if on_main and not re.search(r"\b(anyOf|not)\b", when):
            return True
    return False


#: Steps that let a failure pass (a `|| true` inside `sh` already fails the one-make-call rule).
_SWALLOW = re.compile(r"\b(catchError|warnError|returnStatus|unstable)\b")


def check_jenkinsfile(path: Path, makefile: Makefile) -> list[str]:
    """Every rule for the Jenkinsfile; an empty list when it follows them all."""
    jenkins = load_jenkinsfile(path)
    where = path.name
    problems: list[str] = []
    for call in jenkins.calls:
        if not is_thin(call.script):
            problems.append(
                f"{where}: {call.label} runs sh {call.script.strip()!r}; "
                "a step is one `make <target>` call"
            )
        for target in call.targets:
            if target not in makefile.targets:
                problems.append(
                    f"{where}: {call.label} calls `make {target}`, not a Makefile target"
                )
            if target in NEVER_IN_CI:
                problems.append(
                    f"{where}: {call.label} calls `make {target}`, which {NEVER_IN_CI[target]}"
                )
    for offset in jenkins.unguarded_bindings():
        line = jenkins.code.count("\n", 0, offset) + 1
        problems.append(
            f"{where}: line {line} binds credentials outside `if (!env.CHANGE_FORK)`, so a "
            "fork's pull request would get them (use `withSecrets`)"
        )
    for call in jenkins.calls:
        for target in call.targets:
            if target in MAIN_ONLY and not (call.stage and _stage_on_main(call.stage)):
                problems.append(
                    f"{where}: {call.label} calls `make {target}` but is not limited to main "
                    "(needs `when { branch 'main' }`)"
                )
            if target in PUBLISH_TARGETS | REGISTRY_MOVES and jenkins.inside("post", call.offset):
                problems.append(
                    f"{where}: {call.label} calls `make {target}` in a `post` block, which runs "
                    "whatever the stages' result"
                )
            missing = CREDENTIALS_NEEDED.get(target, frozenset()) - jenkins.bound_variables(
                call.offset
            )
            if missing:
                problems.append(
                    f"{where}: {call.label} calls `make {target}` without "
                    f"{', '.join(sorted(missing))} bound (`withSecrets`)"
                )
            for alternatives in PREREQUISITES.get(target, ()):
                problems.extend(_check_jenkins_prerequisite(jenkins, call, target, alternatives))
    return problems


def _check_jenkins_prerequisite(
    jenkins: Jenkinsfile, call: ShCall, target: str, alternatives: frozenset[str]
) -> list[str]:
    names = " or ".join(f"`make {a}`" for a in sorted(alternatives))
    providers = [
        c
        for c in jenkins.calls
        if c.offset < call.offset
        and alternatives & set(c.targets)
        and not jenkins.inside("parallel", c.offset)
        and not jenkins.inside("post", c.offset)
    ]
    if not providers:
        return [
            f"Jenkinsfile: {call.label} calls `make {target}` without {names} in a stage "
            "before it (stages under `parallel` and steps in `post` do not count)"
        ]
    problems = []
    for provider in [*providers, call]:
        swallow = _SWALLOW.search(provider.stage.own_code) if provider.stage else None
        if swallow:
            problems.append(
                f"Jenkinsfile: {provider.label} uses `{swallow.group(0)}`, so `make {target}` "
                f"could run after {names} failed"
            )
    return dedupe(problems)
