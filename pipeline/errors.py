"""One error type for problems a user can fix, and the CLI wrapper that prints it cleanly."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A problem with the user's data, params or environment, worded for a person.

    Stage CLIs print it as one paragraph on stderr and exit with status 1, without a traceback.
    """


def cli(stage: str) -> Callable[[Callable[..., None]], Callable[..., int]]:
    """Decorate a stage's ``main`` so a :class:`PipelineError` becomes a clean exit.

    Anything else is a bug and keeps its traceback.
    """

    def decorate(main: Callable[..., None]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapper(*args, **kwargs) -> int:
            quiet_process()
            try:
                main(*args, **kwargs)
            except PipelineError as exc:
                print(f"{stage} failed: {exc}", file=sys.stderr)
                return 1
            return 0

        return wrapper

    return decorate


def quiet_process() -> None:
    """Process-wide defaults for a stage run from the command line.

    TensorFlow's C++ logging goes to stderr before any Python logging can stop it, and its
    oneDNN kernels trade bit-for-bit reproducibility for speed; a stage wants neither.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow's INFO lines (table migrations, environment detection) are noise in a stage log.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
