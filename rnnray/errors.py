"""What a user can fix. Every such error derives from :class:`UserError`, so the one printer in
``rnnray.cli`` turns all of them into one line and exit code 2 without knowing each module."""

from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix: the message's first line names the file, field or value."""


class UsageError(UserError, ValueError):
    """Bad input found by a command itself (an argument, a path), not by a config model."""
