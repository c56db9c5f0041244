"""What every command shares: one clear line and exit code 2 for bad input, one line and exit code 1 for
work that ended without a usable result, tracebacks only with --debug.

Imports nothing else of rnnray but its errors, so every module may use it."""

from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import contextmanager

from .errors import RunFailed, UsageError, UserError

__all__ = ["EXIT_BAD_INPUT", "EXIT_RUN_FAILED", "ArgumentParser", "RunFailed", "UsageError", "UserError", "check_flags", "friendly_errors"]

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


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a flag it cannot parse (``--batch 1e9`` for a whole number, a choice
    not offered) is one line naming the flag and exit code 2, like every other bad input, not the
    usage text followed by the error. Its sub-commands' parsers are of this class too."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def check_flags(args, bounds: dict[str, tuple[float | None, float | None]]) -> None:
    """UsageError naming the first flag (``args``' attribute, ``--`` and dashes for its name) whose
    value is set and lies outside its inclusive bounds (None: no bound on that side) or is not finite."""
    for name, (low, high) in bounds.items():
        value = getattr(args, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(value):
            raise UsageError(f"{flag}: must be a finite number (got {value})")
        if low is not None and value < low:
            raise UsageError(f"{flag}: must be at least {_number(low)} (got {_number(value)})")
        if high is not None and value > high:
            raise UsageError(f"{flag}: must be at most {_number(high)} (got {_number(value)})")


def _number(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"
