"""User-facing errors: one line that says what was wrong and what is allowed.

Entry points catch :class:`UserError`, print ``error: <message>`` and exit with status 2,
so a bad input never ends in a Python traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input or environment, reported in one line."""


def unknown_choice(kind: str, name: object, allowed: Iterable[str]) -> UserError:
    """The standard message for a name that is not one of the allowed ones."""
    names = ", ".join(sorted(allowed))
    return UserError(f"unknown {kind} {name!r}; choose one of: {names}")
