from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicops.config import Settings
from musicops.datasets.ingest import IngestError, ingest
from musicops.datasets.manifest import list_versions, load_manifest


def _version_dirs(settings: Settings, name: str) -> list[str]:
    base = settings.datasets_dir / name
    return sorted(p.name for p in base.glob("v*")) if base.exists() else []


def _digest_tree(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_ingest_publishes_v1_then_v2_without_touching_v1(settings: Settings, tiny_dataset: Path) -> None:
    first = ingest(tiny_dataset, "tiny")
    assert first.ok and first.version is not None and first.version.version == 1
    assert first.n_files == 3 and first.total_duration_s == pytest.approx(3.0)
    assert first.problems == [] and first.validation is not None and first.validation.success
    v1_dir = first.version.directory
    assert first.report_path == v1_dir / "report.html"
    assert (v1_dir / "report.md").is_file()
    frozen = _digest_tree(v1_dir)

    (tiny_dataset / "extra.txt").write_text("a fourth clip: the first one again, louder")
    data, rate = sf.read(str(tiny_dataset / "clip_0000.wav"))
    sf.write(str(tiny_dataset / "extra.wav"), data * 1.05, rate, subtype="PCM_16")
    second = ingest(tiny_dataset, "tiny", settings)
    assert second.version is not None and second.version.version == 2
    assert second.version.dataset_hash != first.version.dataset_hash
    assert _digest_tree(v1_dir) == frozen
    assert [v.version for v in list_versions("tiny", settings)] == [1, 2]
    assert len(load_manifest("tiny@v1")) == 3 and len(load_manifest("tiny@latest")) == 4


def test_bad_files_block_publishing_and_are_named(settings: Settings, tiny_dataset: Path) -> None:
    (tiny_dataset / "empty.wav").write_bytes(b"")
    (tiny_dataset / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    nan_samples = np.full(16000, np.nan, dtype=np.float32)
    sf.write(str(tiny_dataset / "nan.wav"), nan_samples, 16000, subtype="FLOAT")
    for stem in ("empty", "notes", "nan"):
        (tiny_dataset / f"{stem}.txt").write_text(f"caption for {stem}")

    with pytest.raises(IngestError) as caught:
        ingest(tiny_dataset, "tiny", settings)
    message = str(caught.value)
    result = caught.value.result
    assert result is not None and result.version is None
    problems = {p.path: p.problem for p in result.problems}
    assert set(problems) == {"empty.wav", "notes.wav", "nan.wav"}
    assert "empty" in problems["empty.wav"]
    assert "not a readable audio file" in problems["notes.wav"]
    assert "NaN" in problems["nan.wav"]
    for bad in ("empty.wav", "notes.wav", "nan.wav"):
        assert bad in message
    assert _version_dirs(settings, "tiny") == []

    report = result.report_path
    assert report is not None and report.parent == settings.datasets_dir / "tiny" / "reports"
    html_text = report.read_text()
    md_text = report.with_suffix(".md").read_text()
    for bad in ("empty.wav", "notes.wav", "nan.wav"):
        assert bad in html_text and bad in md_text
    assert "FAILED" in html_text and str(report) in message


def test_expectation_failures_block_publishing(settings: Settings, tiny_dataset: Path) -> None:
    shutil.copy(tiny_dataset / "clip_0000.wav", tiny_dataset / "copy.wav")
    (tiny_dataset / "copy.txt").write_text("the same audio under another name")
    t = np.arange(8000) / 8000
    sf.write(str(tiny_dataset / "phone.wav"), 0.3 * np.sin(2 * np.pi * 300 * t), 8000, subtype="PCM_16")
    (tiny_dataset / "phone.txt").write_text("ok")

    with pytest.raises(IngestError) as caught:
        ingest(tiny_dataset, "tiny", settings)
    result = caught.value.result
    assert result is not None and result.problems == []  # every file is readable; the data is wrong
    validation = result.validation
    assert validation is not None and not validation.success
    failed = {(o.expectation, o.column) for o in validation.failed}
    assert failed == {
        ("expect_column_values_to_be_unique", "sha256"),
        ("expect_column_values_to_be_in_set", "sample_rate"),
        ("expect_column_value_lengths_to_be_between", "caption"),
    }
    by_column = {o.column: o for o in validation.failed}
    assert by_column["sample_rate"].examples == [8000] and by_column["sample_rate"].files == ["phone.wav"]
    assert sorted(by_column["sha256"].files) == ["clip_0000.wav", "copy.wav"]
    message = str(caught.value)
    for name in ("expect_column_values_to_be_unique", "expect_column_values_to_be_in_set",
                 "expect_column_value_lengths_to_be_between", "phone.wav", "copy.wav"):
        assert name in message
    assert _version_dirs(settings, "tiny") == []
    html_text = result.report_path.read_text()
    assert "expect_column_values_to_be_in_set" in html_text and "phone.wav" in html_text
    assert json.dumps(validation.raw)  # strict-JSON-safe for audits


def test_empty_directory_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "README.md").write_text("nothing here yet")
    with pytest.raises(IngestError, match="no audio files"):
        ingest(folder, "empty", settings)
    assert _version_dirs(settings, "empty") == []


def test_invalid_name_is_rejected_before_anything_is_written(settings: Settings, tiny_dataset: Path) -> None:
    with pytest.raises(ValueError, match="invalid dataset name"):
        ingest(tiny_dataset, "../evil", settings)
    assert not settings.home.exists() or not any(settings.home.rglob("*evil*"))
