from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from musicops.config import Settings
from musicops.datasets.manifest import (
    MANIFEST_COLUMNS,
    dataset_hash,
    latest_version,
    list_versions,
    load_manifest,
    publish_manifest,
    resolve_manifest,
    scan_directory,
    validate_name,
)


def _tone(path: Path, seconds: float = 1.0, sr: int = 32000, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    mono = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    sf.write(str(path), np.stack([mono] * channels, axis=1), sr, subtype="PCM_16")
    return path


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("name", ["music", "lofi-v2", "a.b_c", "X", "a" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["../evil", "..", "a/b", "", ".hidden", "-x", "a..b", "a" * 65, "x y", "é"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid dataset name"):
        validate_name(name)


def test_publish_rejects_path_like_name(settings: Settings, tiny_dataset: Path) -> None:
    rows = scan_directory(tiny_dataset).rows
    with pytest.raises(ValueError, match="invalid dataset name"):
        publish_manifest(rows, "../evil", settings)
    assert not (settings.home / "evil").exists()


def test_scan_rows_and_caption_sources(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    _tone(root / "a.wav")
    _tone(root / "sub" / "b.flac", sr=44100, channels=2)
    _tone(root / "c.wav", seconds=2.0)
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.wav", "caption": "a plain sine tone"}) + "\n"
        + json.dumps({"file_name": "sub/b.flac", "caption": "stereo tone"}) + "\n")
    (root / "c.txt").write_text("  caption from a sidecar file \n")
    (root / "notes.pdf").write_bytes(b"%PDF")
    scan = scan_directory(root)
    assert scan.problems == []
    assert scan.ignored == ["notes.pdf"]
    frame = scan.frame()
    assert list(frame.columns) == list(MANIFEST_COLUMNS)
    assert frame["file_name"].tolist() == ["a.wav", "c.wav", "sub/b.flac"]
    by_name = frame.set_index("file_name")
    assert by_name.loc["c.wav", "caption"] == "caption from a sidecar file"
    assert by_name.loc["sub/b.flac", "caption"] == "stereo tone"
    assert by_name.loc["sub/b.flac", "sample_rate"] == 44100 and by_name.loc["sub/b.flac", "channels"] == 2
    assert by_name.loc["c.wav", "duration_s"] == pytest.approx(2.0)
    assert by_name.loc["a.wav", "sha256"] == hashlib.sha256((root / "a.wav").read_bytes()).hexdigest()
    assert by_name.loc["a.wav", "path"] == str((root / "a.wav").resolve())
    # A 0.3-amplitude sine: peak about -10.5 dBFS, loudness finite and plausible.
    assert by_name.loc["a.wav", "peak_dbfs"] == pytest.approx(-10.46, abs=0.05)
    assert -20 < by_name.loc["a.wav", "loudness_lufs"] < -5


def test_scan_reports_missing_caption_silence_and_bad_metadata(tmp_path: Path) -> None:
    _tone(tmp_path / "uncaptioned.wav")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(32000, dtype=np.float32), 32000)
    (tmp_path / "silent.txt").write_text("nothing at all")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "gone.wav", "caption": "x y z"}\n{oops\n')
    scan = scan_directory(tmp_path)
    assert scan.rows == []
    problems = {p.path: p.problem for p in scan.problems}
    assert "no caption" in problems["uncaptioned.wav"]
    assert "silence" in problems["silent.wav"]
    assert "does not exist" in problems["metadata.jsonl line 1"]
    assert "invalid JSON" in problems["metadata.jsonl line 2"]


def test_scan_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        scan_directory(tmp_path / "nope")


def test_dataset_hash_is_order_independent_and_content_sensitive() -> None:
    rows = [{"file_name": "a.wav", "sha256": "1" * 64, "caption": "one", "path": "/x/a.wav"},
            {"file_name": "b.wav", "sha256": "2" * 64, "caption": "two", "path": "/x/b.wav"}]
    digest = dataset_hash(rows)
    assert digest == dataset_hash(list(reversed(rows)))
    assert digest == dataset_hash(pd.DataFrame(rows))
    moved = [dict(r, path="/elsewhere/" + r["file_name"]) for r in rows]
    assert digest == dataset_hash(moved)  # absolute location is not content
    assert digest != dataset_hash([dict(rows[0], caption="uno"), rows[1]])
    assert digest != dataset_hash(rows[:1])
    assert len(digest) == 64


def test_publish_versions_are_immutable_and_loadable(settings: Settings, tiny_dataset: Path) -> None:
    frame = scan_directory(tiny_dataset).frame()
    v1 = publish_manifest(frame, "tiny", settings, source=tiny_dataset)
    assert (v1.version, v1.path) == (1, settings.datasets_dir / "tiny" / "v0001" / "manifest.parquet")
    before = _tree_digest(v1.directory)
    v2 = publish_manifest(frame.iloc[:2], "tiny", settings)
    assert v2.version == 2 and v2.dataset_hash != v1.dataset_hash
    assert _tree_digest(v1.directory) == before
    info = json.loads((v1.directory / "manifest.json").read_text())
    assert info["dataset_hash"] == v1.dataset_hash and info["n_rows"] == 3 and info["version"] == 1
    assert info["source"] == str(tiny_dataset.resolve()) and info["code_version"]

    assert [v.version for v in list_versions("tiny", settings)] == [1, 2]
    assert latest_version("tiny", settings) == v2
    expected = frame.sort_values("file_name").reset_index(drop=True)
    loaded = load_manifest("tiny@v1")
    pd.testing.assert_frame_equal(loaded.drop(columns="path"), expected.drop(columns="path"))
    # the version owns its audio: kept once per content beside the versions, named by sha256, and the
    # stored manifest refers to it relative to the version folder (no host path)
    kept = settings.datasets_dir / "tiny" / "audio"
    for path, sha in zip(loaded["path"], loaded["sha256"], strict=True):
        assert Path(path).parent == kept.resolve() and Path(path).name.startswith(sha)
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
    stored = pd.read_parquet(v1.path)
    assert all(str(p).startswith("../audio/") for p in stored["path"])
    assert len(list(kept.iterdir())) == 3  # v2's rows are v1's files: nothing copied twice
    for source in tiny_dataset.glob("*.wav"):  # the ingested folder changes: the version does not
        source.write_bytes(b"RIFF-edited")
    assert all(hashlib.sha256(Path(p).read_bytes()).hexdigest() == sha
               for p, sha in zip(load_manifest("tiny@v1")["path"], loaded["sha256"], strict=True))
    assert len(load_manifest("tiny")) == 2
    assert len(load_manifest("tiny@latest")) == 2
    assert len(load_manifest("tiny@1")) == 3
    assert len(load_manifest(v1.path)) == 3
    assert len(load_manifest(v1.directory)) == 3
    assert len(load_manifest(str(v1.path))) == 3
    assert resolve_manifest("tiny@v2") == v2.path


def test_publish_skips_claimed_and_interrupted_versions(settings: Settings, tiny_dataset: Path) -> None:
    rows = scan_directory(tiny_dataset).rows
    base = settings.datasets_dir / "tiny"
    (base / "v0001").mkdir(parents=True)  # another publisher claimed v1 and has not finished
    (base / "v0001" / "marker").write_text("theirs")
    published = publish_manifest(rows, "tiny", settings)
    assert published.version == 2
    assert (base / "v0001" / "marker").read_text() == "theirs"
    assert [v.version for v in list_versions("tiny", settings)] == [2]  # v1 is incomplete: not listed
    assert not list(base.glob("v*/.*.part"))


def test_load_errors_name_what_is_missing(settings: Settings, tiny_dataset: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no published versions"):
        load_manifest("unknown")
    publish_manifest(scan_directory(tiny_dataset).rows, "tiny", settings)
    with pytest.raises(FileNotFoundError, match="no version v7"):
        load_manifest("tiny@v7")
    with pytest.raises(ValueError, match="invalid manifest reference"):
        load_manifest("tiny@newest")
    with pytest.raises(ValueError, match="invalid dataset name"):
        load_manifest("../evil@v1")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        load_manifest(settings.home / "missing.parquet")
    with pytest.raises(FileNotFoundError, match="without manifest.parquet"):
        load_manifest(tiny_dataset)


def test_load_refuses_a_tampered_manifest(settings: Settings, tiny_dataset: Path) -> None:
    version = publish_manifest(scan_directory(tiny_dataset).rows, "tiny", settings)
    frame = pd.read_parquet(version.path)
    frame.loc[0, "caption"] = "something else entirely"
    frame.to_parquet(version.path, index=False)
    with pytest.raises(ValueError, match="do not match the recorded dataset hash"):
        load_manifest("tiny@v1")


def test_stale_listing_never_overwrites_a_version(settings: Settings, tiny_dataset: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A publisher that listed the folder before a rival published must still not reuse v1."""
    rows = scan_directory(tiny_dataset).rows
    first = publish_manifest(rows, "tiny", settings)
    frozen = _tree_digest(first.directory)
    base = first.directory.parent
    real_iterdir = Path.iterdir

    def stale_iterdir(self: Path):
        return iter([]) if self == base else real_iterdir(self)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "iterdir", stale_iterdir)
        second = publish_manifest(rows[:1], "tiny", settings)
    assert second.version == 2
    assert _tree_digest(first.directory) == frozen
