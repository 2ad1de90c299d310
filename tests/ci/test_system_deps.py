"""scripts/system-deps.sh (`make system-deps`): reads system-packages.txt, installs what is
missing, or stops with one paragraph when it cannot. Installing itself is not repeated here
(.ci/run and every `make test` run it for real); these run the script on small lists."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "system-deps.sh"


def _run(listing: str, tmp_path: Path, *, uid: int | None = None) -> subprocess.CompletedProcess:
    packages = tmp_path / "system-packages.txt"
    packages.write_text(listing)
    path = os.environ["PATH"]
    if uid is not None:  # a user who is not root and has no sudo
        stubs = tmp_path / "bin"
        stubs.mkdir()
        (stubs / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (stubs / "sudo").write_text("#!/bin/sh\nexit 1\n")
        for stub in stubs.iterdir():
            stub.chmod(0o755)
        path = f"{stubs}{os.pathsep}{path}"
    return subprocess.run(
        ["bash", str(SCRIPT), str(packages)],
        env=os.environ | {"PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_tool_the_project_lists_is_installed():
    """`make test` ran `make system-deps` first, so the real list has nothing left to install."""
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(REPO_ROOT / "system-packages.txt")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_nothing_to_do_when_commands_and_paths_are_there(tmp_path):
    proc = _run(f"# comment\n\nbash bash   # a command\n{SCRIPT} x  # a path\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_a_path_check_is_a_glob_over_versions(tmp_path):
    """PostgreSQL's initdb lives under its major version: Debian 12 has 15, Ubuntu 24.04 (a
    GitHub runner) 16. A check naming 15 failed there after apt had installed 16."""
    initdb = tmp_path / "postgresql" / "16" / "bin" / "initdb"
    initdb.parent.mkdir(parents=True)
    initdb.write_text("")
    proc = _run(f"{tmp_path}/postgresql/*/bin/initdb postgresql\n", tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_without_root_or_sudo_it_names_what_to_install(tmp_path):
    listing = "no-such-tool-1 pkg-one\n/no/such/initdb pkg-two\nno-such-tool-2 pkg-one\n"
    proc = _run(listing, tmp_path, uid=1000)
    assert proc.returncode == 1
    message = " ".join(proc.stderr.split())
    assert "not installed here (no-such-tool-1 /no/such/initdb no-such-tool-2)" in message
    assert "sudo apt-get install pkg-one pkg-two)" in message  # each package once
    assert "Traceback" not in proc.stderr and proc.stderr.count("system-deps:") == 1


@pytest.mark.parametrize("line", ["lonely-command", "a b c"])
def test_a_malformed_line_is_named(tmp_path, line):
    proc = _run(f"bash bash\n{line}\n", tmp_path)
    assert proc.returncode == 1
    assert f"line 2: expected '<command-or-path> <debian-package>', got '{line}'" in proc.stderr
