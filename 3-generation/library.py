"""Prompt templates and parameter presets: versioned JSON files shipped in the package
(`templates/`, `presets/`), named from prompts files and API requests, and recorded in provenance.

A template is text with `{parameter}` slots, each parameter with a default and limits (choices,
length, integer range), so a studio can fix the wording of a recurring brief and vary only what
should vary. A preset is a named set of line parameters (duration, variations, tags). Both are
looked up by name among the shipped files only (a name is never a path), and an asset records the
name, version, the file's sha256 and the values used: changing a template's file is a new version.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from musicops.errors import MusicopsError

LIBRARY = Path(__file__).resolve().parent
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
PRESET_FIELDS = ("duration_s", "n_variations", "tags")
MAX_VALUE_CHARS = 200


class LibraryError(MusicopsError, ValueError):
    """An unknown template or preset, or values a template does not accept."""


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    text: str
    parameters: dict[str, dict[str, Any]]
    sha256: str
    description: str = ""

    def render(self, values: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """(prompt, the values used, defaults filled in); every problem named."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.parameters))
        if unknown:
            raise LibraryError(f"template {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                               f"it takes {', '.join(sorted(self.parameters))}")
        used: dict[str, Any] = {}
        for name, spec in self.parameters.items():
            if name not in values and "default" not in spec:
                raise LibraryError(f"template {self.name!r} needs a value for {name!r}")
            used[name] = _checked(self.name, name, spec, values.get(name, spec.get("default")))
        return self.text.format(**used), used

    def identity(self, used: dict[str, Any]) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "vars": used}


@dataclass(frozen=True)
class Preset:
    name: str
    version: int
    values: dict[str, Any]
    sha256: str
    description: str = ""

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def _checked(template: str, name: str, spec: dict[str, Any], value: Any) -> Any:
    where = f"template {template!r} parameter {name!r}"
    if spec.get("type") == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise LibraryError(f"{where}: expected an integer, got {value!r}")
        low, high = spec.get("min"), spec.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise LibraryError(f"{where}: {value} is outside [{low}, {high}]")
        return value
    if not isinstance(value, str) or not value.strip():
        raise LibraryError(f"{where}: expected non-empty text, got {value!r}")
    value = " ".join(value.split())
    limit = min(int(spec.get("max_length", MAX_VALUE_CHARS)), MAX_VALUE_CHARS)
    if len(value) > limit:
        raise LibraryError(f"{where}: {len(value)} characters; the limit is {limit}")
    choices = spec.get("choices")
    if choices and value not in choices:
        raise LibraryError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def _file(kind: str, name: Any) -> tuple[dict[str, Any], str]:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise LibraryError(f"{kind} name must be lowercase letters, digits and '-' (got {name!r})")
    known = names(kind)
    if name not in known:
        raise LibraryError(f"unknown {kind} {name!r}; known: {', '.join(known) or 'none'}")
    raw = (LIBRARY / f"{kind}s" / f"{name}.json").read_bytes()
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


@cache
def names(kind: str) -> tuple[str, ...]:
    """The shipped templates or presets, by file name (the only names that resolve)."""
    return tuple(sorted(p.stem for p in (LIBRARY / f"{kind}s").glob("*.json") if NAME.fullmatch(p.stem)))


@cache
def template(name: str) -> Template:
    data, sha = _file("template", name)
    slots = {field for _, field, _, _ in string.Formatter().parse(data["template"]) if field}
    if slots != set(data["parameters"]):
        raise LibraryError(f"template file {name!r}: slots {sorted(slots)} do not match parameters "
                           f"{sorted(data['parameters'])}")
    return Template(data["name"], int(data["version"]), data["template"], data["parameters"], sha,
                    data.get("description", ""))


@cache
def preset(name: str) -> Preset:
    data, sha = _file("preset", name)
    values = {k: data[k] for k in PRESET_FIELDS if k in data}
    return Preset(data["name"], int(data["version"]), values, sha, data.get("description", ""))


def resolve(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A prompts-file line or API request with `template` / `vars` / `preset` turned into a plain
    record (prompt, duration_s, ...), and the lineage to record: {"template": ..., "preset": ...}.
    The line's own fields win over a preset's."""
    if "template" not in record and "preset" not in record:
        if "vars" in record:
            raise LibraryError("'vars' needs a 'template'")
        return record, {}
    record, lineage = dict(record), {}
    if "preset" in record:
        chosen = preset(record.pop("preset"))
        for key, value in chosen.values.items():
            record.setdefault(key, value)
        lineage["preset"] = chosen.identity()
    if "template" in record:
        if "prompt" in record:
            raise LibraryError("give either 'prompt' or 'template' (with 'vars'), not both")
        values = record.pop("vars", None)
        if values is not None and not isinstance(values, dict):
            raise LibraryError(f"'vars' must be an object of parameter values, got {type(values).__name__}")
        chosen_template = template(record.pop("template"))
        record["prompt"], used = chosen_template.render(values)
        lineage["template"] = chosen_template.identity(used)
    elif "vars" in record:
        raise LibraryError("'vars' needs a 'template'")
    return record, lineage
