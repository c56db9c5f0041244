"""What every command shares: one clear line and exit code 2 for bad input, one line and exit code 1 for
work that ended without a usable result or a file that could not be written mid-run (a full disk, a
folder made read-only), tracebacks only with --debug.

Imports nothing else of rnnray but its errors, so every module may use it."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from contextlib import contextmanager

from .errors import RunFailed, UsageError, UserError, WriteFailed, os_reason

__all__ = ["EXIT_BAD_INPUT", "EXIT_RUN_FAILED", "EXIT_WRITE_FAILED", "ArgumentParser", "RunFailed", "UsageError", "UserError",
           "WriteFailed", "check_flags", "friendly_errors", "write_fault"]

EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 1
EXIT_RUN_FAILED = 1
# what a full disk, a file-size limit or a folder made read-only answers a write with
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def write_fault(e: BaseException) -> str | None:
    """The one line for a write that failed, when ``e`` is one or was caused by one (Ray and Tune wrap
    the errors of their workers and callbacks): ours (:class:`WriteFailed`, naming the file) or a
    library's ``OSError`` of a full or read-only disk with its file name. None otherwise."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(getattr(e, "cause", None), BaseException):  # Ray's RayTaskError: the worker's own error
            e = e.cause
            continue
        if isinstance(e, WriteFailed):
            return str(e).strip().splitlines()[0]
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS and e.filename:
            return f"{e.filename}: cannot be written ({os_reason(e)})"
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def friendly_errors(debug: bool = False):
    """Turn the errors a user can fix into one line on stderr and exit code 2, a run without a usable
    result or a failed write into one line (naming the file) and exit code 1."""
    try:
        yield
    except (UserError, RunFailed) as e:
        if debug or os.environ.get("RNNRAY_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_RUN_FAILED if isinstance(e, RunFailed) else EXIT_BAD_INPUT)
    except Exception as e:
        line = None if debug or os.environ.get("RNNRAY_DEBUG") else write_fault(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(EXIT_WRITE_FAILED)


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
