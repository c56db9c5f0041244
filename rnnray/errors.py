"""What a user can fix, and work that ran but produced nothing usable. Every error of the first kind
derives from :class:`UserError`, so the one printer in ``rnnray.cli`` turns all of them into one line
and exit code 2 without knowing each module; :class:`RunFailed` is one line and exit code 1."""

from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix: the message's first line names the file, field or value."""


class UsageError(UserError, ValueError):
    """Bad input found by a command itself (an argument, a path), not by a config model."""


class RunFailed(Exception):
    """The work ran and ended without a usable result (every run diverged, no trial left a checkpoint):
    not bad input found up front, but a command must not end with exit code 0 and a result that is
    not there. The message's first line says why and where the records are; exit code 1."""
