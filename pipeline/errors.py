"""One error type for problems a user can fix, and the CLI wrapper that prints it cleanly."""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable


class PipelineError(Exception):
    """A problem with the user's data, params or environment, worded for a person.

    Stage CLIs print it as one paragraph on stderr and exit with status 1, without a traceback.
    """


class Terminated(BaseException):
    """SIGTERM (a cancelled CI job, ``timeout``, a pod stopped) raised in the stage's main
    thread, so that ``with`` blocks unwind: an MLflow run ends, a half-written output is
    discarded. By default the signal ended the process where it stood, and the run stayed
    RUNNING in the store for ever."""


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
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _raise_terminated)
            try:
                main(*args, **kwargs)
            except Terminated:
                _mark_run_killed()
                print(
                    f"{stage} stopped by SIGTERM; its outputs were not written (the MLflow run, "
                    "if one started, is marked KILLED).",
                    file=sys.stderr,
                )
                return 128 + signal.SIGTERM
            except PipelineError as exc:
                print(f"{stage} failed: {exc}", file=sys.stderr)
                return 1
            except BrokenPipeError:
                # The reader went away (`... | head`): stop quietly, as a command-line tool
                # does, and keep Python's exit-time flush from failing on the closed pipe.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                return 128 + signal.SIGPIPE
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


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated(signum)


def _mark_run_killed() -> None:
    """The run the stage started (ended FAILED by its ``with`` block) is KILLED: stopped."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    try:
        run = mlflow.active_run() or mlflow.last_active_run()
        if run is not None:
            mlflow.tracking.MlflowClient().set_terminated(run.info.run_id, "KILLED")
    except Exception:  # the store is what failed, or is gone: the message still goes out
        pass


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
