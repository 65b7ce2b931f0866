"""Prompt templates and presets: shipped files, strict values, names that are never paths, and the
lineage each asset records (template name, version, file sha256 and values; preset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicops.generation import library
from musicops.generation.library import LibraryError, names, preset, resolve, template
from musicops.generation.prompts import PromptsFileError, expand, read_prompts, validate_record


def test_every_shipped_template_and_preset_loads() -> None:
    assert {"game-level-loop", "ad-underscore", "mood-piece"} <= set(names("template"))
    assert {"loop-short", "loop-30s", "sting"} <= set(names("preset"))
    for name in names("template"):
        shipped = template(name)
        assert shipped.name == name and shipped.version >= 1 and len(shipped.sha256) == 64
        prompt, used = shipped.render({})  # every parameter has a default
        assert prompt and set(used) == set(shipped.parameters)
    for name in names("preset"):
        assert preset(name).name == name and preset(name).values["duration_s"] > 0


def test_rendering_is_pinned_and_values_are_checked() -> None:
    loop = template("game-level-loop")
    assert loop.render({})[0] == "playful chiptune loop for a forest level at 120 BPM"
    assert loop.render({"mood": "tense", "bpm": 140, "setting": "  ice   cave "})[0] == \
        "tense chiptune loop for a ice cave level at 140 BPM"
    for values, message in (({"tempo": 100}, "has no parameter"), ({"mood": "angry"}, "not one of"),
                            ({"bpm": 400}, "outside"), ({"bpm": "fast"}, "expected an integer"),
                            ({"bpm": True}, "expected an integer"), ({"setting": ""}, "non-empty text"),
                            ({"setting": "x" * 41}, "the limit is 40")):
        with pytest.raises(LibraryError, match=message):
            loop.render(values)


@pytest.mark.parametrize("name", ["../../etc/passwd", "Game-Level-Loop", "game_level_loop", "", "a" * 65, 7])
def test_names_are_never_paths(name) -> None:
    with pytest.raises(LibraryError, match="lowercase letters"):
        template(name)
    with pytest.raises(LibraryError, match="unknown template 'no-such-template'"):
        template("no-such-template")


def test_a_line_naming_a_template_and_preset_expands_and_records_both() -> None:
    line = validate_record(3, {"template": "mood-piece", "vars": {"mood": "hopeful"}, "preset": "sting",
                               "n_variations": 2})
    assert line.prompt == "hopeful piece for solo piano in D minor"
    assert (line.duration_s, line.n_variations, line.tags) == (3.0, 2, ("sting",))  # the line's own field wins
    lineage = json.loads(line.lineage)
    assert lineage["template"] == {"name": "mood-piece", "version": 1, "sha256": template("mood-piece").sha256,
                                   "vars": {"mood": "hopeful", "instrument": "solo piano", "key": "D minor"}}
    assert lineage["preset"] == {"name": "sting", "version": 1, "sha256": preset("sting").sha256}
    items = expand([line])
    assert len(items) == 2 and all(item.lineage == line.lineage for item in items)
    assert validate_record(1, {"prompt": "x", "duration_s": 1}).lineage == ""
    for record, message in (({"template": "mood-piece", "prompt": "x", "duration_s": 1}, "not both"),
                            ({"prompt": "x", "duration_s": 1, "vars": {"a": 1}}, "needs a 'template'"),
                            ({"template": "mood-piece", "vars": [1], "duration_s": 1}, "must be an object"),
                            ({"template": "mood-piece"}, "duration_s is missing"),
                            ({"preset": "nope", "prompt": "x"}, "unknown preset")):
        with pytest.raises(ValueError, match=message):
            validate_record(1, record)


def test_prompts_files_name_templates_in_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"template": "game-level-loop", "vars": {"bpm": 90}, "preset": "loop-short"}) + "\n")
    [line] = read_prompts(jsonl)
    assert line.prompt.endswith("at 90 BPM") and line.duration_s == 8.0 and line.n_variations == 2
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('template,vars,duration_s\nad-underscore,"{""energy"": ""warm""}",4\n')
    [row] = read_prompts(csv_file)
    assert row.prompt.startswith("warm corporate pop underscore") and row.duration_s == 4.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"template": "game-level-loop", "vars": {"bpm": 9}, "duration_s": 2}) + "\n")
    with pytest.raises(PromptsFileError, match="line 1: template 'game-level-loop' parameter 'bpm': 9 is outside"):
        read_prompts(bad)
    assert library.LIBRARY.joinpath("templates").is_dir()


@pytest.mark.slow  # generates two clips with the tiny model
def test_assets_record_template_preset_and_training_data(tmp_path: Path) -> None:
    from musicops.config import get_settings
    from musicops.generation.batch import run_batch
    from musicops.generation.planning import BatchOptions

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"template": "mood-piece", "vars": {"mood": "calm"}, "preset": "sting",
                                   "duration_s": 0.5, "n_variations": 2}) + "\n")
    result = run_batch(prompts, "musicgen-tiny", BatchOptions(log_to_mlflow=False), get_settings(tmp_path / "home"))
    records = [o.record for o in result.outcomes]
    assert len(records) == 2 and records[0].prompt == "calm piece for solo piano in D minor"
    for record in records:
        assert record.lineage["template"]["name"] == "mood-piece" and record.lineage["template"]["vars"]["mood"] == "calm"
        assert record.lineage["preset"]["name"] == "sting" and record.tags == ["sting"]
        assert record.lineage["training_data"] == {"dataset": None, "dataset_version": None, "dataset_hash": None,
                                                   "base_model": None, "model": "musicgen-tiny"}
    assert records[0].lineage == resolve({"template": "mood-piece", "vars": {"mood": "calm"}, "preset": "sting"})[1] | {
        "training_data": records[0].lineage["training_data"]}
