"""Prompts files (JSONL or CSV) parsed strictly: every bad line is reported by number, none skipped.

Fields: `prompt` (required), `duration_s` (required), `seed`, `n_variations`, `tags` (optional).
Or `template` + `vars` instead of `prompt`, and `preset` for default line fields (musicops.generation.
library: versioned files shipped with musicops, recorded in each asset's lineage).
Anything else is an error, because a misspelt field (`durations`) silently ignored would
generate the wrong thing for thousands of tracks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicops.errors import MusicopsError
from musicops.models.sampling import MAX_DURATION_S, MIN_DURATION_S  # the one home of the duration limits
from musicops.store.cache import normalize_prompt

FIELDS = {"prompt", "duration_s", "seed", "n_variations", "tags", "template", "vars", "preset"}
FILE_FIELDS = {"melody"}  # prompts files only (a path beside the file); never from the API
MAX_PROMPT_CHARS = 1000
MAX_VARIATIONS = 16
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ITEMS = 10_000
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class PromptLine:
    line_no: int
    prompt: str
    duration_s: float
    seed: int | None
    n_variations: int
    tags: tuple[str, ...]
    melody: str | None = None  # reference audio for MusicGen-melody (absolute path)
    melody_sha256: str | None = None
    lineage: str = ""  # JSON: the template and preset a line named (not part of the cache key)


@dataclass(frozen=True)
class WorkItem:
    """One asset to produce: a prompt line's variation with its own seed."""

    line_no: int
    variation: int
    prompt: str
    normalized_prompt: str
    duration_s: float
    seed: int
    tags: tuple[str, ...] = field(default_factory=tuple)
    melody: str | None = None  # reference audio (MusicGen-melody); its sha256 joins the cache key
    melody_sha256: str | None = None
    lineage: str = ""  # JSON: template/preset identities for provenance (not part of the cache key)


@dataclass(frozen=True)
class LineError:
    line_no: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.message}"


class PromptsFileError(MusicopsError, ValueError):
    """The prompts file cannot be used; `.errors` names each bad line."""

    def __init__(self, path: str, errors: list[LineError]):
        self.path = path
        self.errors = errors
        if len(errors) == 1 and errors[0].line_no == 0:  # the file (or option) as a whole, not a line
            super().__init__(f"{path}: {errors[0].message}")
            return
        shown = "\n".join(f"  {e}" for e in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(f"{path}: {len(errors)} bad line(s):\n{shown}{more}")


def read_prompts(path: str | Path) -> list[PromptLine]:
    """Parse and validate a whole prompts file; raise PromptsFileError listing every bad line."""
    path = Path(path)
    if not path.is_file():
        raise PromptsFileError(str(path), [LineError(0, "file not found")])
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PromptsFileError(str(path), [LineError(0, f"file too large ({size} bytes > {MAX_FILE_BYTES})")])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptsFileError(str(path), [LineError(0, f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from exc
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        raw, errors = _jsonl_records(text)
    elif suffix == ".csv":
        raw, errors = _csv_records(text)
    else:
        raise PromptsFileError(str(path), [LineError(0, f"unsupported extension {suffix!r}: use .jsonl or .csv")])
    lines: list[PromptLine] = []
    for line_no, record in raw:
        try:
            lines.append(validate_record(line_no, record, melody_dir=path.parent))
        except ValueError as exc:
            errors.append(LineError(line_no, str(exc)))
    if not lines and not errors:
        errors.append(LineError(0, "no prompts in file"))
    total = sum(line.n_variations for line in lines)
    if total > MAX_ITEMS:
        errors.append(LineError(0, f"{total} items requested; the limit per file is {MAX_ITEMS}"))
    if errors:
        raise PromptsFileError(str(path), sorted(errors, key=lambda e: e.line_no))
    return lines


def expand(lines: list[PromptLine]) -> list[WorkItem]:
    """One work item per line x variation. A line without a seed gets one derived from its prompt
    (and how many identical prompts came before it), so reordering the file keeps cache hits."""
    seen: Counter[str] = Counter()
    items = []
    for line in lines:
        normalized = normalize_prompt(line.prompt)
        occurrence = seen[normalized]
        seen[normalized] += 1
        base = line.seed if line.seed is not None else derived_seed(normalized, occurrence)
        for variation in range(line.n_variations):
            items.append(WorkItem(line.line_no, variation, line.prompt, normalized, line.duration_s,
                                  (base + variation) % (MAX_SEED + 1), line.tags, line.melody, line.melody_sha256,
                                  line.lineage))
    return items


def derived_seed(normalized_prompt: str, occurrence: int = 0) -> int:
    digest = hashlib.sha256(f"{occurrence}:{normalized_prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (MAX_SEED + 1)


def cli_items(prompts: list[str], duration_s: float, seed: int, melody: str | Path | None = None) -> list[WorkItem]:
    """Work items for prompts typed on the command line (seed, seed+1, ...), checked like a file's;
    `melody` (a reference audio file) applies to every prompt."""
    items, errors = [], []
    for number, prompt in enumerate(prompts, start=1):
        record: dict[str, Any] = {"prompt": prompt, "duration_s": duration_s}
        if melody is not None:
            record["melody"] = str(Path(melody).resolve())
        try:
            line = validate_record(number, record, melody_dir=Path.cwd())
        except ValueError as exc:
            errors.append(LineError(number, str(exc)))
            continue
        items.append(WorkItem(number, 0, line.prompt, normalize_prompt(line.prompt), line.duration_s, seed + number - 1,
                              (), line.melody, line.melody_sha256))
    for name, option in (("duration_s", "--duration"), ("melody", "--melody")):
        # one option's value is shared by every prompt: name the option once, not each prompt line
        mine = [e for e in errors if e.message.startswith((f"{name} ", f"{name}:"))]
        if mine:
            message = mine[0].message
            if name == "duration_s":  # "--duration: must be in [...]" reads better than "duration_s must be"
                message = message.removeprefix(name).lstrip(" :")
            raise PromptsFileError(option, [LineError(0, message)])
    if errors:
        raise PromptsFileError("--prompt", errors)
    return items


def _jsonl_records(text: str) -> tuple[list[tuple[int, Any]], list[LineError]]:
    records, errors = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((line_no, json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append(LineError(line_no, f"invalid JSON ({exc.msg} at column {exc.colno})"))
    return records, errors


def _csv_records(text: str) -> tuple[list[tuple[int, Any]], list[LineError]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return [], []
    except csv.Error as exc:
        return [], [LineError(1, f"unreadable CSV header ({exc})")]
    records, errors = [], []
    unknown = [h for h in header if h not in FIELDS]
    if unknown:
        errors.append(LineError(1, f"unknown column(s) {', '.join(map(repr, unknown))}; allowed: {sorted(FIELDS)}"))
    try:
        for row in reader:
            line_no = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                errors.append(LineError(line_no, f"{len(row)} cells for {len(header)} columns"))
                continue
            records.append((line_no, {k: v for k, v in zip(header, row, strict=True) if k in FIELDS and v != ""}))
    except csv.Error as exc:
        errors.append(LineError(reader.line_num, f"unreadable CSV ({exc})"))
    return records, errors


def validate_record(line_no: int, record: Any, melody_dir: Path | None = None) -> PromptLine:
    """One prompt line, checked. `melody_dir` (prompts files and the CLI only) allows a `melody` field:
    a reference audio path, relative to that folder; without it (the API) the field is unknown."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    allowed = FIELDS | FILE_FIELDS if melody_dir is not None else FIELDS
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {sorted(allowed)}")
    if isinstance(record.get("vars"), str):  # a CSV cell: the values as JSON text
        try:
            record = {**record, "vars": json.loads(record["vars"])}
        except json.JSONDecodeError as exc:
            raise ValueError(f"vars is not JSON ({exc.msg})") from None
    from musicops.generation.library import resolve

    record, lineage = resolve(record)
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt is missing or empty")
    if not has_visible_text(prompt):
        raise ValueError("prompt has no visible characters (only whitespace, zero-width or format characters)")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if any(ord(c) < 32 and c not in "\t\n" for c in prompt):
        raise ValueError("prompt contains control characters")
    if has_lone_surrogate(prompt):
        raise ValueError("prompt contains a lone UTF-16 surrogate (not valid Unicode text)")
    if "duration_s" not in record:
        raise ValueError("duration_s is missing")
    duration = _number(record["duration_s"], "duration_s")
    if not MIN_DURATION_S <= duration <= MAX_DURATION_S:
        raise ValueError(f"duration_s must be in [{MIN_DURATION_S:g}, {MAX_DURATION_S:g}] seconds, got {duration:g} "
                         f"(the loudness check needs at least {MIN_DURATION_S:g} s: BS.1770 gates 0.4 s blocks)")
    seed = record.get("seed")
    if seed is not None:
        seed = _integer(seed, "seed")
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    variations = _integer(record.get("n_variations", 1), "n_variations")
    if not 1 <= variations <= MAX_VARIATIONS:
        raise ValueError(f"n_variations must be in [1, {MAX_VARIATIONS}], got {variations}")
    melody, melody_sha = _melody(record.get("melody"), melody_dir)
    return PromptLine(line_no, prompt.strip(), duration, seed, variations, _tags(record.get("tags")), melody, melody_sha,
                      json.dumps(lineage, sort_keys=True) if lineage else "")


def _melody(value: Any, folder: Path | None) -> tuple[str | None, str | None]:
    """A readable reference audio file (path relative to the prompts file) and its sha256."""
    if value is None or value == "":
        return None, None
    if not isinstance(value, str) or folder is None:
        raise ValueError("melody must be a path to an audio file")
    from musicops.audio.io import AudioError, read_audio
    from musicops.hashing import file_sha256

    path = (folder / value).resolve()
    if not path.is_file():
        raise ValueError(f"melody file not found: {value!r} (looked for {path})")
    try:
        read_audio(path)
    except AudioError as exc:
        raise ValueError(f"melody {value!r} is not usable audio: {exc}") from None
    return str(path), file_sha256(path)


def has_visible_text(text: str) -> bool:
    """At least one letter, digit, punctuation mark or symbol: a prompt of zero-width spaces, joiners
    or other format characters is empty to the model but not to `str.strip()`."""
    return any(unicodedata.category(c)[0] in "LNPS" for c in text)


def has_lone_surrogate(text: str) -> bool:
    """JSON's \\ud800 escapes decode to code points no encoder accepts: stored or echoed back, they
    fail the response (a 500), so they are refused with the field's name instead."""
    return any("\ud800" <= c <= "\udfff" for c in text)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _integer(value: Any, name: str) -> int:
    number = _number(value, name)
    if number != int(number):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _tags(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [t for t in (part.strip() for part in value.split(",")) if t]
    if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in value):
        raise ValueError("tags must be a list of short strings (or comma-separated in CSV)")
    if len(value) > 32:
        raise ValueError("at most 32 tags")
    if any(has_lone_surrogate(t) or any(ord(c) < 32 for c in t) for t in value):
        raise ValueError("tags must not contain control characters or lone UTF-16 surrogates")
    return tuple(value)
