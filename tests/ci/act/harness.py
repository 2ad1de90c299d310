"""Run the GitHub workflows for real with act, offline, on this machine (`make ci-act`).

act runs each job in host mode (`-P ubuntu-latest=-self-hosted`: no container) in a copy of a
scenario repository; the four actions the workflows use from GitHub are replaced, through
`--local-repository`, by the stand-ins in tests/ci/act/actions/, and `gh` by tests/ci/act/bin/gh.
What a job publishes goes to a real OCI registry (Debian's `docker-registry`) on 127.0.0.1, and
the MLflow registry is a sqlite store shared by the scenarios of one session.

Two things are narrowed so that a run stays bounded, and both are visible in `ACT_ENV`:
the `checks` job's `make test` runs only `CHECKS_PYTEST` (through PYTEST_ADDOPTS; the full
suite is what runs act in the first place), and each job's `.venv` is this checkout's, linked in
by the cache stand-in as a cache hit would restore it, instead of 2.5 GB installed per job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.ports import free_port
from tests.conftest import REPO_ROOT
from tests.readme.readme import clone_working_tree

HERE = Path(__file__).resolve().parent
STANDIN_ACTIONS = HERE / "actions"
STANDIN_BIN = HERE / "bin"
ACT = REPO_ROOT / ".venv" / "bin" / "act"
# The docker-compatible client: docker where there is an engine, else buildah through oci.
OCI = REPO_ROOT.parent / "shared" / "tools" / "oci"
# What the checks job's `make test` runs under act: the CI-definition checks, a few seconds.
CHECKS_PYTEST = "tests/ci/test_structure.py -q"
# The repository name act derives from the scenario clone's origin.
GITHUB_REPOSITORY = "acme/tabular-mlops"
_USES = re.compile(r"uses:\s*(actions/[\w.-]+)@([\w.-]+)")


def container_tool() -> str:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return docker
    return str(OCI)


def _wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


@contextmanager
def oci_registry(root: Path) -> Iterator[str]:
    """Debian's docker-registry on a free 127.0.0.1 port, storing in `root`; yields host:port."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/v2/", timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def remove_local_images(prefix: str) -> None:
    """Drop the local image names the scenarios built and pulled (`prefix` is the registry's
    host:port, new each session), so buildah's storage does not collect a name per run."""
    buildah = shutil.which("buildah")
    if buildah is None:
        return
    names = subprocess.run(
        [buildah, "images", "--format", "{{.Name}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    mine = [name for name in names if name.startswith(f"{prefix}/")]
    if mine:
        subprocess.run([buildah, "rmi", *mine], capture_output=True, timeout=300)


def registry_tags(registry: str, repository: str) -> list[str]:
    """The tags the registry holds for a repository (empty when it has none)."""
    try:
        with urllib.request.urlopen(f"http://{registry}/v2/{repository}/tags/list") as resp:
            return sorted(json.load(resp).get("tags") or [])
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return []
        raise


def registry_digest(ref: str) -> str:
    """The manifest digest of `ref` (host:port/repo:tag), read back with skopeo."""
    proc = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"skopeo inspect {ref} failed:\n{proc.stderr}"
    return json.loads(proc.stdout)["Digest"]


def git(repo: Path, *args: str) -> str:
    env = os.environ | {
        "GIT_AUTHOR_NAME": "ci-act",
        "GIT_AUTHOR_EMAIL": "ci-act@example.com",
        "GIT_COMMITTER_NAME": "ci-act",
        "GIT_COMMITTER_EMAIL": "ci-act@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True, timeout=120
    ).stdout.strip()


def scenario_repo(dest: Path, params_edits: dict[str, str] | None = None) -> Path:
    """A clone of the working tree on `main`, origin on GitHub, with one commit on top that
    trains the quickest estimator (and applies `params_edits`: exact text replacements in
    params.yaml), so `github.event.before` is a real base for the report."""
    repo = clone_working_tree(REPO_ROOT, dest)
    for link in (".venv", ".uv"):  # act copies the working directory; the jobs link their own
        if (repo / link).is_symlink():
            (repo / link).unlink()
    git(repo, "checkout", "-q", "-B", "main")
    git(repo, "remote", "set-url", "origin", f"https://github.com/{GITHUB_REPOSITORY}.git")
    params = repo / "params.yaml"
    text = params.read_text().replace("estimator: keras_mlp", "estimator: logistic_regression")
    for old, new in (params_edits or {}).items():
        assert old in text, f"params.yaml has no {old!r}"
        text = text.replace(old, new)
    params.write_text(text)
    git(repo, "commit", "-qam", "ci-act scenario")
    return repo


def standin_repositories() -> dict[str, Path]:
    """`actions/<name>@<ref>` -> its stand-in, for every such action the workflows use."""
    refs: dict[str, Path] = {}
    for path in [*(REPO_ROOT / ".github").rglob("*.yml"), *(REPO_ROOT / ".github").rglob("*.yaml")]:
        for name, ref in _USES.findall(path.read_text()):
            standin = STANDIN_ACTIONS / name.split("/", 1)[1]
            if not (standin / "action.yml").is_file():
                raise RuntimeError(
                    f"{path.relative_to(REPO_ROOT)} uses {name}@{ref}, which has no offline "
                    f"stand-in; add one as {standin.relative_to(REPO_ROOT)}/action.yml"
                )
            refs[f"{name}@{ref}"] = standin
    return refs


def seed_environment_cache(cache: Path) -> None:
    """Cache entries, under every key the setup action may ask for, holding links into this
    checkout's .venv (and .uv) plus a fresh `.installed`, so `make env` has nothing to do."""
    venv = REPO_ROOT / ".venv"
    for key in _venv_cache_keys():
        entry = cache / key
        (entry / ".venv").mkdir(parents=True, exist_ok=True)
        for item in venv.iterdir():
            link = entry / ".venv" / item.name
            if item.name != ".installed" and not link.is_symlink():
                link.symlink_to(item)
        (entry / ".venv" / ".installed").touch()
        if (REPO_ROOT / ".uv").exists() and not (entry / ".uv").is_symlink():
            (entry / ".uv").symlink_to(REPO_ROOT / ".uv")


def _venv_cache_keys() -> list[str]:
    """The venv key of .github/actions/setup as act computes it for the scenario clone:
    venv-Linux-py<python3.11 found on PATH>-<hashFiles('uv.lock', 'pyproject.toml')>."""
    python = shutil.which("python3.11")
    if python is None:
        raise RuntimeError("no python3.11 on PATH for the setup-python stand-in")
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    keys = []
    # hashFiles: sha256 over the files' sha256 digests; both orders, as act may sort the matches.
    for names in (("uv.lock", "pyproject.toml"), ("pyproject.toml", "uv.lock")):
        outer = hashlib.sha256()
        for name in names:
            outer.update(hashlib.sha256((REPO_ROOT / name).read_bytes()).digest())
        keys.append(f"venv-Linux-py{version}-{outer.hexdigest()}")
    return keys


@dataclass
class ActRun:
    returncode: int
    events: list[dict] = field(repr=False)
    log: str = field(repr=False)

    def jobs(self) -> dict[str, str]:
        """jobID -> result, for every job that ran ("success" / "failure")."""
        return {e["jobID"]: e["jobResult"] for e in self.events if "jobResult" in e}

    def job_order(self) -> list[str]:
        """Job ids in the order they started."""
        order: list[str] = []
        for e in self.events:
            if e.get("jobID") and e["jobID"] not in order:
                order.append(e["jobID"])
        return order

    def steps(self, job: str) -> dict[str, str]:
        """Step name -> result for the top-level steps of a job."""
        return {
            e["step"]: e["stepResult"]
            for e in self.events
            if e.get("jobID") == job and "stepResult" in e and len(e.get("stepID") or []) == 1
        }

    def output(self, job: str) -> str:
        return "".join(
            e["msg"] for e in self.events if e.get("jobID") == job and e.get("raw_output")
        )

    def tail(self, chars: int = 6000) -> str:
        return self.log[-chars:]


def run_act(
    repo: Path,
    event: str,
    workflow: str,
    work: Path,
    *,
    env: dict[str, str],
    variables: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    inputs: dict[str, str] | None = None,
    payload: dict | None = None,
    timeout: float = 1800,
) -> ActRun:
    """`act EVENT -W WORKFLOW` in `repo`, host mode, offline; the JSON log parsed."""
    work.mkdir(parents=True, exist_ok=True)
    args = [
        str(ACT),
        event,
        "-W",
        workflow,
        "-P",
        "ubuntu-latest=-self-hosted",
        "--action-offline-mode",
        "--action-cache-path",
        str(work / "act-cache"),
        "--cache-server-addr",
        "127.0.0.1",
        "--artifact-server-addr",
        "127.0.0.1",
        "--json",
    ]
    for ref, path in standin_repositories().items():
        args += ["--local-repository", f"{ref}={path}"]
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]
    for name, value in (variables or {}).items():
        args += ["--var", f"{name}={value}"]
    for name, value in (secrets or {}).items():
        args += ["--secret", f"{name}={value}"]
    for name, value in (inputs or {}).items():
        args += ["--input", f"{name}={value}"]
    if payload is not None:
        event_file = work / "event.json"
        event_file.write_text(json.dumps(payload))
        args += ["--eventpath", str(event_file)]
    host_env = os.environ | {"PATH": f"{STANDIN_BIN}{os.pathsep}{os.environ['PATH']}"}
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MLFLOW_TRACKING_URI", "PYTEST_ADDOPTS"):
        host_env.pop(name, None)
    proc = subprocess.run(
        args,
        cwd=repo,
        env=host_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    events, lines = [], []
    for line in proc.stdout.splitlines():
        try:
            event_json = json.loads(line)
        except json.JSONDecodeError:
            lines.append(line)
            continue
        events.append(event_json)
        prefix = f"[{event_json.get('job', '')}] "
        lines.append(prefix + str(event_json.get("msg", "")).rstrip("\n"))
    return ActRun(proc.returncode, events, "\n".join(lines) + "\n" + proc.stderr)
