"""Prompts files: strict parsing, every bad line named by number, deterministic seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicops.generation.prompts import (
    MIN_DURATION_S,
    PromptsFileError,
    derived_seed,
    expand,
    has_visible_text,
    read_prompts,
    validate_record,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_files_parse() -> None:
    jsonl = read_prompts(EXAMPLES / "prompts.jsonl")
    assert len(jsonl) == 5 and sum(line.n_variations for line in jsonl) == 7
    csv_lines = read_prompts(EXAMPLES / "prompts.csv")
    assert csv_lines[0].tags == ("ambient", "background") and csv_lines[1].seed is None
    assert csv_lines[1].prompt == "playful pluck melody in C major, 100 BPM"


def test_every_bad_line_is_named(tmp_path) -> None:
    good = {"prompt": "calm piano", "duration_s": 2}
    lines = [
        json.dumps(good),                                        # 1 ok
        "{not json",                                             # 2
        json.dumps({"prompt": "  ", "duration_s": 2}),           # 3 empty prompt
        json.dumps({"prompt": "x", "duration_s": -1}),           # 4 negative
        json.dumps({"prompt": "x", "duration_s": 1e6}),          # 5 huge
        json.dumps({"prompt": "x" * 10_000, "duration_s": 2}),   # 6 10 kB prompt
        json.dumps({**good, "durations": 3}),                    # 7 unknown field
        json.dumps({**good, "n_variations": 0}),                 # 8
        json.dumps({**good, "seed": "abc"}),                     # 9
        json.dumps(["a", "list"]),                               # 10
        json.dumps({"prompt": "x"}),                             # 11 missing duration
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PromptsFileError) as caught:
        read_prompts(path)
    numbers = [e.line_no for e in caught.value.errors]
    assert numbers == list(range(2, 12))
    text = str(caught.value)
    for needle in ("line 2: invalid JSON", "line 3: prompt is missing or empty", "line 4: duration_s",
                   "line 5: duration_s", "line 6: prompt is 10000 characters", "line 7: unknown field(s) 'durations'",
                   "line 8: n_variations", "line 9: seed must be a number", "line 10: expected a JSON object",
                   "line 11: duration_s is missing"):
        assert needle in text


def test_csv_unknown_column_and_bad_cells(tmp_path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt,duration_s,colour\ncalm,2,red\n,3,blue\n")
    with pytest.raises(PromptsFileError) as caught:
        read_prompts(path)
    text = str(caught.value)
    assert "line 1: unknown column(s) 'colour'" in text and "line 3: prompt is missing or empty" in text


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("p.txt", "x", "unsupported extension"),
    ("p.jsonl", "", "no prompts"),
    ("p.jsonl", b"\xff\xfe\x00bad", "not UTF-8"),
])
def test_file_level_problems(tmp_path, name, content, needle) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PromptsFileError, match=needle):
        read_prompts(path)


def test_seeds_are_deterministic_and_distinct() -> None:
    items = expand(read_prompts(EXAMPLES / "prompts.jsonl"))
    assert len(items) == 7
    again = expand(read_prompts(EXAMPLES / "prompts.jsonl"))
    assert [i.seed for i in items] == [i.seed for i in again]
    pop = [i for i in items if i.line_no == 2]
    assert [i.variation for i in pop] == [0, 1] and pop[1].seed == pop[0].seed + 1
    assert items[0].seed == 1
    assert derived_seed("calm", 0) != derived_seed("calm", 1)


@pytest.mark.parametrize("prompt", ["\u200b", "\u200b\u200c\u200d\ufeff", " \u2060 \u200b\t", "\u00a0\u3000"])
def test_prompts_without_visible_characters_are_refused(tmp_path, prompt: str) -> None:
    """Zero-width and other format characters survive str.strip() and normalisation: refused by name."""
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "calm piano", "duration_s": 2}) + "\n"
                    + json.dumps({"prompt": prompt, "duration_s": 2}) + "\n")
    with pytest.raises(PromptsFileError) as caught:
        read_prompts(path)
    assert [e.line_no for e in caught.value.errors] == [2]
    assert "no visible characters" in str(caught.value) or "missing or empty" in str(caught.value)
    assert has_visible_text("\u200bcalm\u200b") and has_visible_text("🎹") and not has_visible_text(prompt)


@pytest.mark.parametrize(("duration", "ok"), [(0.1, False), (0.49, False), (MIN_DURATION_S, True), (0.6, True)])
def test_durations_below_what_the_loudness_check_can_measure_are_refused(duration: float, ok: bool) -> None:
    """BS.1770 gates 0.4 s blocks: one minimum, named in the message, for files, the CLI and the API."""
    assert MIN_DURATION_S == 0.5
    record = {"prompt": "calm piano", "duration_s": duration}
    if ok:
        assert validate_record(1, record).duration_s == duration
        return
    with pytest.raises(ValueError, match=r"duration_s must be in \[0\.5, 60\] seconds.*at least 0\.5 s"):
        validate_record(1, record)


def test_file_and_option_errors_name_the_file_or_option_not_a_line(tmp_path: Path) -> None:
    from musicops.generation.prompts import cli_items

    with pytest.raises(PromptsFileError) as missing:
        read_prompts(tmp_path / "nope.jsonl")
    assert str(missing.value) == f"{tmp_path / 'nope.jsonl'}: file not found"
    with pytest.raises(PromptsFileError) as duration:
        cli_items(["calm piano", "drums"], 0.0, seed=0)
    assert str(duration.value).startswith("--duration: must be in [") and "line" not in str(duration.value)
    with pytest.raises(PromptsFileError) as prompt:
        cli_items(["calm piano", "  "], 2.0, seed=0)
    assert str(prompt.value).startswith("--prompt: 1 bad line(s)") and "line 2" in str(prompt.value)
