"""One error type for problems a user can fix, and the CLI wrapper that prints it cleanly."""

from __future__ import annotations

import functools
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
            try:
                main(*args, **kwargs)
            except PipelineError as exc:
                print(f"{stage} failed: {exc}", file=sys.stderr)
                return 1
            return 0

        return wrapper

    return decorate
