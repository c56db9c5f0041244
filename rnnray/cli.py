"""What every command shares: one clear line and exit code 2 for bad input, tracebacks only with --debug.

Imports nothing else of rnnray but its errors, so every module may use it."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from .errors import UsageError, UserError

__all__ = ["EXIT_BAD_INPUT", "UsageError", "UserError", "friendly_errors"]

EXIT_BAD_INPUT = 2


@contextmanager
def friendly_errors(debug: bool = False):
    """Turn the errors a user can fix into one line on stderr and exit code 2."""
    try:
        yield
    except UserError as e:
        if debug or os.environ.get("RNNRAY_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
