"""What a user can fix, and work that ran but produced nothing usable. Every error of the first kind
derives from :class:`UserError`, so the one printer in ``rnnray.cli`` turns all of them into one line
and exit code 2 without knowing each module; :class:`RunFailed` is one line and exit code 1."""

from __future__ import annotations

import os
import re


class UserError(Exception):
    """Bad input a user can fix: the message's first line names the file, field or value."""


class UsageError(UserError, ValueError):
    """Bad input found by a command itself (an argument, a path), not by a config model."""


class RunFailed(Exception):
    """The work ran and ended without a usable result (every run diverged, no trial left a checkpoint):
    not bad input found up front, but a command must not end with exit code 0 and a result that is
    not there. The message's first line says why and where the records are; exit code 1."""


class WriteFailed(Exception):
    """A file could not be written although its path was proven writable before the work started: the
    disk filled up, a file-size limit was reached, or the folder was made read-only mid-run. Not bad
    input (exit code 1, not 2); every file is written whole or not at all (``results.atomic``), so
    what was finished before stays valid and the next run resumes from it."""


def os_reason(e: OSError) -> str:
    """What the system said, in its words (``File too large``), also from libraries that word it their
    own way (pyarrow: ``Error writing bytes to file. Detail: [errno 27] File too large``)."""
    if isinstance(e.errno, int) and e.errno > 0:
        return os.strerror(e.errno)
    found = re.search(r"\[errno (\d+)\]", str(e), re.I)
    if found:
        return os.strerror(int(found.group(1)))
    return (str(e).splitlines() or [""])[0] or e.__class__.__name__
