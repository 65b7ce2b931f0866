"""One rule for every user-supplied name that may become a path segment or a registry key."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def safe_name(name: str, what: str = "name") -> str:
    """Return `name` unchanged, or raise ValueError naming what it was for and the rule."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid {what} name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit, and no '..'")
    return name
