"""What every command shares: one clear line and exit code 2 for bad input, one line and exit code 1 for
work that ended without a usable result, tracebacks only with --debug.

Imports nothing else of rnnray but its errors, so every module may use it."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from .errors import RunFailed, UsageError, UserError

__all__ = ["EXIT_BAD_INPUT", "EXIT_RUN_FAILED", "RunFailed", "UsageError", "UserError", "friendly_errors"]

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


@contextmanager
def friendly_errors(debug: bool = False):
    """Turn the errors a user can fix into one line on stderr and exit code 2, a run without a usable
    result into one line and exit code 1."""
    try:
        yield
    except (UserError, RunFailed) as e:
        if debug or os.environ.get("RNNRAY_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_RUN_FAILED if isinstance(e, RunFailed) else EXIT_BAD_INPUT)
