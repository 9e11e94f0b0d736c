"""Errors a user can cause (config, names, paths, data).

`cvjax.main` prints a `UserError` as one line and exits with status 2; any other
exception is a bug and keeps its traceback.
"""

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input; the message names the fix in one line."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """A `UserError` for an unknown `name`, listing close matches from `known`."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    if close:
        hint = f"did you mean {', '.join(close)}?"
    else:
        hint = f"choose one of: {', '.join(known[:20])}"
    return UserError(f"unknown {kind} {name!r}; {hint}")
