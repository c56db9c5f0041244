"""What every command shares: one clear line and exit code 2 for bad input, tracebacks only with --debug."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from .config import ConfigError

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad input found by a command itself (not by a config model)."""


def user_errors() -> tuple[type[BaseException], ...]:
    from .results import ResultsError
    from .zoo.storage import ZooError

    errors: list[type[BaseException]] = [ConfigError, UsageError, ZooError, ResultsError]
    try:
        from .encoders import InfeasibleBudget, UnknownEncoder

        errors += [InfeasibleBudget, UnknownEncoder]
    except ImportError:
        pass
    return tuple(errors)


@contextmanager
def friendly_errors(debug: bool = False):
    """Turn the errors a user can fix into one line on stderr and exit code 2."""
    try:
        yield
    except user_errors() as e:
        if debug or os.environ.get("RNNRAY_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
