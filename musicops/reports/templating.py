"""Render the HTML report templates (package data next to this module) with autoescape on.

Reports show user text (prompts, captions, file names, override reasons); autoescaping makes
every interpolation safe by default instead of relying on each f-string to call html.escape.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).with_name("templates")


def num(value: Any, spec: str = ".4g") -> str:
    """A number for a report cell: `-` when missing, `spec` for floats, anything else as text."""
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


@functools.cache
def environment() -> jinja2.Environment:
    """One Jinja environment: autoescape everywhere, undefined names are errors, not blanks."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["num"] = num
    env.filters["fmt"] = lambda value, spec: format(value, spec)
    return env


def render(template: str, **context: Any) -> str:
    """Render `templates/<template>` (e.g. "release.html.j2") with `context`."""
    return environment().get_template(template).render(**context)
