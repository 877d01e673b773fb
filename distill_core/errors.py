"""The one exception type for mistakes a user can fix (bad file, column, setting)."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A problem with user input; the CLI prints its message on one line and exits non-zero."""
