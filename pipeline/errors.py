"""One error type for problems a user can fix, and the CLI wrapper that prints it cleanly."""

from __future__ import annotations

import errno
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

    So do an OS error of the environment (a path that cannot be written, a full disk, named)
    and an MLflow store that refuses the operation. Anything else is a bug and keeps its
    traceback.
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
            except OSError as exc:
                if exc.errno not in ENVIRONMENT_ERRNOS:
                    raise
                where = f" '{exc.filename}'" if exc.filename else ""
                print(f"{stage} failed: cannot use{where}: {exc.strerror}.", file=sys.stderr)
                return 1
            except Exception as exc:
                if not _is_store_error(exc):
                    raise
                first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
                print(
                    f"{stage} failed: the MLflow store refused the operation: {first}",
                    file=sys.stderr,
                )
                return 1
            return 0

        return wrapper

    return decorate


#: OS errors that are the environment's, not a bug: a path that cannot be written (a read-only
#: or immutable file, a full disk).
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _is_store_error(exc: Exception) -> bool:
    """An MLflow store that cannot do what was asked (read-only, locked, unreachable)."""
    return any(
        c.__name__ == "MlflowException" and c.__module__.startswith("mlflow")
        for c in type(exc).__mro__
    )


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
