"""Every command the README shows works exactly as written, in a fresh shell and a fresh clone."""

from __future__ import annotations

import re

import pytest

from tests.readme.readme import NOT_RUN, Block, bash_blocks, not_run_reason, run_blocks

# The whole README, as run here, takes minutes (four pipeline runs, three of them Keras): 10 min
# on the shared 2-core machine. One block is enough to show that a broken command fails.
README_TIMEOUT = 1800


def test_the_readme_has_commands_to_run(readme_text):
    commands = [c for b in bash_blocks(readme_text) for c in b.commands]
    run = [c for c in commands if not_run_reason(c) is None]
    assert (
        "make run    # the whole pipeline on the built-in Palmer Penguins data, tracked in ./mlruns"
        in run
    )
    assert any(c.startswith('make dvc ARGS="exp run') for c in run)
    assert len(run) >= 10, run


def test_every_excused_command_is_still_in_the_readme(readme_text):
    commands = [c for b in bash_blocks(readme_text) for c in b.commands]
    stale = [p for p in NOT_RUN if not any(c.startswith(p) for c in commands)]
    assert stale == [], f"NOT_RUN names commands the README no longer has: {stale}"


def test_make_help_lists_every_target_the_readme_names(readme_text):
    """The README says `make help` lists the targets; k8s-render was missing (the help's
    pattern had no digits)."""
    import subprocess
    from pathlib import Path

    # In code: `make x`, a command line starting with it, or after && or "$(".
    named = set(re.findall(r"(?:`|^|&& |\$\()make (?:-s )?([a-z][a-z0-9-]+)", readme_text, re.M))
    root = Path(__file__).parents[2]
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=root, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    listed = {line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", shown).splitlines()}
    assert "k8s-render" in named and "run" in named
    assert sorted(named - listed) == []


def test_a_multi_line_command_is_one_command():
    text = '```bash\ncurl -s http://x \\\n  -d \'{"a": 1,\n  "b": 2}\'\necho done  # c\n```\n'
    (block,) = bash_blocks(text)
    assert block.commands == ('curl -s http://x \\\n  -d \'{"a": 1,\n  "b": 2}\'', "echo done  # c")


@pytest.mark.readme
def test_every_readme_command_runs_as_written(readme_text, fresh_clone):
    clone, home = fresh_clone
    run_blocks(bash_blocks(readme_text), clone, home, timeout=README_TIMEOUT)
    # What the commands promised is there.
    assert (clone / "models" / "export" / "model.onnx").is_file()
    assert (clone / "dvc_plots" / "index.html").is_file()
    assert "random_forest" in (clone / "params.yaml").read_text()


@pytest.mark.readme
def test_a_broken_readme_command_fails_the_test(readme_text, fresh_clone):
    """The README line as it used to be: DVC finds the shell's `python`, not the project's."""
    clone, home = fresh_clone
    fixed = 'make dvc ARGS="exp run -S train.estimator=random_forest"'
    assert fixed in readme_text
    broken = readme_text.replace(fixed, ".venv/bin/dvc exp run -S train.estimator=random_forest")
    (block,) = [b for b in bash_blocks(broken) if any("exp run" in c for c in b.commands)]
    with pytest.raises(AssertionError) as failure:
        run_blocks([block], clone, home, timeout=600)
    message = str(failure.value)
    assert f"bash block at line {block.line} failed" in message
    assert re.search(r"README command failed \(exit [1-9]\d*\): \.venv/bin/dvc exp run", message)
    assert (
        "ModuleNotFoundError: No module named" in message or "python: command not found" in message
    )


def test_a_block_stops_at_its_first_failing_command(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    block = Block(1, ("true", "false", "touch ran-after-failure"))
    with pytest.raises(AssertionError, match=r"README command failed \(exit 1\): false"):
        run_blocks([block], tmp_path, home, timeout=60)
    assert not (tmp_path / "ran-after-failure").exists()


def test_make_help_piped_is_plain_text_in_the_makefiles_order():
    """`make help | less` showed raw escape codes, and `sort` scattered related targets."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).parents[2]
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=root, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    assert "\x1b" not in shown
    documented = re.findall(
        r"^([a-zA-Z0-9_ -]+):.*## ", (root / "Makefile").read_text(), re.M
    )  # fmt: skip
    listed = [line.split("  ")[1] for line in shown.splitlines()]
    assert [name.split()[0] for name in documented] == [name.split()[0] for name in listed]
    assert listed[:3] == ["help", "env", "run"]


def test_the_registry_block_says_rollback_refuses_after_the_first_promotion(readme_text):
    """The block promotes once, then rolls back: as written, rollback fails. The README says
    so, quoting the registry's own message."""
    from tests.conftest import REPO_ROOT

    (block,) = [
        b for b in bash_blocks(readme_text) if any("make rollback" in c for c in b.commands)
    ]
    assert [c.split()[1] for c in block.commands if c.startswith("make ")].count("promote") == 1
    quoted = "has no previous\nchampion to roll back to"
    assert quoted in readme_text
    assert " ".join(quoted.split()) in (REPO_ROOT / "pipeline/registry.py").read_text()


def test_the_readmes_metrics_command_prints_a_readable_table(readme_text):
    """`dvc metrics show` with no target put the gate's and parity's keys in one row, 2,119
    characters wide on the default data."""
    import shlex
    import subprocess

    from tests.conftest import REPO_ROOT

    (command,) = [
        c for b in bash_blocks(readme_text) for c in b.commands if "dvc metrics show" in c
    ]  # fmt: skip
    shown = subprocess.run(
        shlex.split(command, comments=True), cwd=REPO_ROOT, capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout  # fmt: skip
    assert "accuracy" in shown
    assert max(len(line) for line in shown.splitlines()) <= 160, shown
