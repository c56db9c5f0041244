"""What every command shares: one clear line and exit code 2 for bad input, one line and exit code 1 for a
file that could not be written mid-run (a full disk, a folder made read-only), tracebacks only with --debug.

Imports nothing else of rnnray but its errors, so every module may use it."""

from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager

from .errors import UsageError, UserError, WriteFailed, os_reason

__all__ = ["EXIT_BAD_INPUT", "EXIT_WRITE_FAILED", "UsageError", "UserError", "WriteFailed", "friendly_errors", "write_fault"]

EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 1
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
    """Turn the errors a user can fix into one line on stderr and exit code 2, a failed write into one
    line naming the file and exit code 1."""
    try:
        yield
    except UserError as e:
        if debug or os.environ.get("RNNRAY_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as e:
        line = None if debug or os.environ.get("RNNRAY_DEBUG") else write_fault(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(EXIT_WRITE_FAILED)
