"""What the Makefile exports to every recipe (the stages DVC runs inherit it)."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO_ROOT

_PRINT = 'print-tf-log-level: ; @echo "$$TF_CPP_MIN_LOG_LEVEL"\n'


def _recipe_sees(env: dict[str, str]) -> str:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", "Makefile", "-f", "-", "print-tf-log-level"],
        cwd=REPO_ROOT, input=_PRINT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def test_tensorflow_c_log_is_quiet_below_fatal_in_make_recipes():
    """At level 2 Keras training printed `E0000 ... node_def_util.cc` lines (TF's own note on
    an ignored tf.data attribute) into every `make run`."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    assert _recipe_sees(env) == "3"


def test_a_user_can_turn_tensorflows_log_back_on():
    assert _recipe_sees({**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}) == "0"
