"""The README's shell commands, read out of its ```bash blocks and run as a new user would.

A new user opens a fresh shell in a fresh clone and types what the README shows. `run_blocks`
does exactly that: each block is one `bash` process with `set -e`, started with an environment
that has nothing of this repository in it (no `.venv/bin` on PATH, no `make` state, no MLflow
or DVC variables), in a clone of the working tree. The only shortcut is the environment: the
clone links this checkout's `.venv` (and `.uv`) instead of installing 2.5 GB again, and its
`pyproject.toml` / `uv.lock` are dated so that `make env` finds it up to date.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Commands the test does not run, by how they start, and why. Everything else in a ```bash
# block runs. Each prefix must still match a README command (a test checks it), so this list
# cannot outlive the commands it excuses.
NOT_RUN: dict[str, str] = {
    "make test": "the README test is itself part of `make test`; running the suite inside it "
    "would recurse (CI runs `make test` on a fresh clone)",
    "make ui": "a server on the fixed port 5000 that runs until Ctrl-C; tests/ui drives the same "
    "UI on a free port",
    "make serve": "a server on the fixed port 8000 that runs until Ctrl-C; tests/serving runs the "
    "same server (python -m serving.server) on free ports",
    "SERVING_API_TOKEN=s3cret make serve": "as `make serve`",
    "SERVING_MODEL_URI=models:/penguins-classifier@champion make serve": "as `make serve`",
    "curl -s http://127.0.0.1:8000/": "talks to the `make serve` above",
    "make rollback": "needs a champion before the current one; the block promotes only one, so "
    "rollback would rightly refuse (tests/integration/test_registry.py covers it)",
    "make infer-contract TARGET=churned": "an example for the reader's own table "
    "(data/my_table.csv with a `churned` column), which a clone does not have",
    "make image": "needs a Docker engine (CONTAINER_TOOL=docker); .ci/run builds and smoke-tests "
    "the image with ../shared/tools/oci, `make ci-act` pushes it",
    "docker run": "needs a Docker engine",
    "gh ": "talks to GitHub",
    ".venv/bin/dvc remote": "the DVC remote: an S3 bucket",
    'git commit -m "DVC remote"': "the DVC remote: an S3 bucket",
    "make compare PREDICTION_LOG=/var/log/serving": "reads a production server's logs from "
    "/var/log/serving; tests/serving/test_rollout.py runs `make compare` on a real server's logs",
    "SERVING_PREDICTION_LOG=logs/predictions.jsonl": "as `make serve`",
    "make monitor": "needs the logs of a server that has answered traffic (the line above); "
    "tests/monitoring runs the monitor on a real server's logs",
    "kubectl ": "needs a Kubernetes cluster; tests/deploy renders and validates the manifests",
    "make team-up": "the team runbook: tests/team runs this block's commands, read from the "
    "README, against a stack of its own (make serve on a free port; its teardown is team-down)",
    'eval "$(make -s team-env)"': "the team runbook (see make team-up)",
    "make team-dvc-remote": "the team runbook (see make team-up)",
    'make run && make register && make promote REASON="first team model"': "the team runbook "
    "(see make team-up)",
    "make ci-dvc-push": "the team runbook (see make team-up)",
    "make team-down": "the team runbook (see make team-up)",
    'curl --fail-with-body -u "admin:$MLFLOW_TRACKING_PASSWORD"': "talks to the team stack's "
    "MLflow server (tests/team runs this command, read from the README)",
}

# Long commands run in the README test; the failure message shows this much of their output.
OUTPUT_TAIL = 4000

_FENCE = re.compile(r"^(?P<indent>[ ]*)```bash[ ]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    line: int  # README line of the opening fence
    commands: tuple[str, ...]


def bash_blocks(text: str) -> list[Block]:
    """Every ```bash block of a Markdown text, as its commands (comment lines dropped)."""
    blocks = []
    for match in _FENCE.finditer(text):
        indent = len(match["indent"])
        lines = [line[indent:] for line in match["body"].splitlines()]
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(line, tuple(_commands(lines))))
    return blocks


def _commands(lines: list[str]) -> list[str]:
    """Join continuation lines (a trailing backslash, or a quote still open) into commands."""
    commands: list[str] = []
    pending = ""
    for line in lines:
        pending = f"{pending}\n{line}" if pending else line
        if pending.rstrip().endswith("\\") or not _complete(pending):
            continue
        command = pending.strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    if pending.strip():
        raise ValueError(f"unterminated command in a bash block: {pending!r}")
    return commands


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def not_run_reason(command: str) -> str | None:
    for prefix, reason in NOT_RUN.items():
        if command.startswith(prefix):
            return reason
    return None


def block_script(block: Block) -> str:
    """The bash program for one block: the commands in order, the excused ones as comments."""
    lines = [
        "set -euo pipefail",
        # Name the README command that failed, since `set -e` alone stops silently.
        "trap 'echo \"README command failed (exit $?): $BASH_COMMAND\" >&2' ERR",
    ]
    for command in block.commands:
        if not_run_reason(command) is None:
            lines.append(command)
        else:
            lines.append(": not run: " + shlex.quote(command.splitlines()[0]))
    return "\n".join(lines) + "\n"


def fresh_shell_env(home: Path) -> dict[str, str]:
    """What a new terminal has: a system PATH, a HOME, a locale; nothing from this project."""
    path = [
        entry
        for entry in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if entry and ".venv" not in entry and "/.uv/" not in entry
    ]
    env = {"PATH": os.pathsep.join(path), "HOME": str(home), "LANG": "C.UTF-8"}
    # git needs a name to commit; a real user has one configured.
    env |= {
        "GIT_AUTHOR_NAME": "README reader",
        "GIT_AUTHOR_EMAIL": "reader@example.com",
        "GIT_COMMITTER_NAME": "README reader",
        "GIT_COMMITTER_EMAIL": "reader@example.com",
    }
    for name in ("TMPDIR", "UV_CACHE_DIR", "PYENV_ROOT"):
        if name in os.environ:
            env[name] = os.environ[name]
    # uv's cache is under the real HOME; keep using it so nothing is downloaded again.
    env.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    return env


def clone_working_tree(repo: Path, dest: Path) -> Path:
    """A git clone of `repo` holding its working tree as it is now (edits and new files
    included, ignored files not), committed, with the project's environment linked in."""
    git = ["git", "-c", "user.name=readme", "-c", "user.email=readme@example.com"]
    subprocess.run([*git, "clone", "-q", str(repo), str(dest)], check=True, timeout=120)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        source, target = repo / rel, dest / rel
        if source.is_file() or source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
        elif target.exists() and not source.exists():
            target.unlink()  # deleted in the working tree
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True, timeout=60)
    subprocess.run(
        [*git, "commit", "-q", "--allow-empty", "-m", "working tree"],
        cwd=dest,
        check=True,
        timeout=60,
    )
    for env_dir in (".venv", ".uv"):
        if (repo / env_dir).exists():
            (dest / env_dir).symlink_to(repo / env_dir)
    for lock in ("pyproject.toml", "uv.lock"):
        os.utime(dest / lock, (0, 0))  # older than .venv/.installed: `make env` has nothing to do
    return dest


def run_blocks(blocks: list[Block], clone: Path, home: Path, timeout: float) -> None:
    """Run each block in a fresh shell in `clone`; raise AssertionError naming the first failure."""
    env = fresh_shell_env(home)
    for block in blocks:
        proc = subprocess.run(
            ["bash", "-c", block_script(block)],
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr)[-OUTPUT_TAIL:]
            raise AssertionError(
                f"the README's bash block at line {block.line} failed "
                f"(exit {proc.returncode}):\n{output}"
            )
