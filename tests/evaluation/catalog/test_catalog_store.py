"""The versioned catalog: bad files named, incremental versions, atomic and race-safe adds."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicops.config import get_settings
from musicops.datasets.synth import synthesize
from musicops.evaluation.catalog import fingerprint as fpm
from musicops.evaluation.catalog.store import (
    CatalogError,
    add_works,
    catalog_dir,
    list_versions,
    load_catalog,
)

SR = 16000


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("works")
    return synthesize(out, n=5, seed=21, duration_s=3.0, sample_rate=SR)


def _folder(tmp_path: Path, name: str, files: list[Path]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


def test_bad_files_are_named_and_the_rest_added(clips, tmp_path) -> None:
    folder = _folder(tmp_path, "mixed", clips[:3])
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    sf.write(str(folder / "nan.wav"), np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")
    (folder / "metadata.jsonl").write_text("{}\n")  # not audio: ignored, not a problem

    result = add_works(folder, "mixed", embedder=None)

    problems = {Path(p.path).name: p.problem for p in result.problems}
    assert set(problems) == {"empty.wav", "notes.wav", "nan.wav"}
    assert "empty" in problems["empty.wav"] and "NaN" in problems["nan.wav"]
    assert [w.title for w in result.added] == [c.stem for c in clips[:3]]
    assert result.version == 1 and result.ref == "mixed@v1"
    assert result.info["counts"]["works"] == 3 and result.info["embedder"] is None
    reloaded = load_catalog("mixed")
    assert [w.sha256 for w in reloaded.works] == [w.sha256 for w in result.works]
    assert reloaded.fingerprints.work_set == {0, 1, 2}
    assert (catalog_dir("mixed") / "v0001" / "catalog.json").stat().st_mode & 0o044  # readable by others


def test_only_bad_files_cannot_start_a_catalog(tmp_path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.wav").write_bytes(b"")
    with pytest.raises(CatalogError) as info:
        add_works(folder, "bad", embedder=None)
    assert [Path(p.path).name for p in info.value.problems] == ["empty.wav"]
    assert list_versions("bad") == []


def test_incremental_add_makes_v2_and_v1_still_loads(clips, tmp_path) -> None:
    v1 = add_works(_folder(tmp_path, "first", clips[:2]), "inc", embedder=None)
    v2 = add_works(_folder(tmp_path, "second", clips[:4]), "inc", embedder=None)  # 2 known + 2 new

    assert (v1.version, v2.version) == (1, 2) and list_versions("inc") == [1, 2]
    assert len(v2.added) == 2 and len(v2.skipped) == 2 and v2.info["previous_version"] == 1
    assert [w.work_id for w in v2.works] == [0, 1, 2, 3]
    old = load_catalog("inc", 1)
    assert len(old.works) == 2 and old.fingerprints.work_set == {0, 1}
    new = load_catalog("inc")
    assert new.version == 2 and new.fingerprints.work_set == {0, 1, 2, 3}
    # The new version's postings are the old ones plus the new works' (nothing lost or duplicated).
    assert len(new.fingerprints) == len(old.fingerprints) + sum(
        len(fpm.fingerprint(sf.read(str(c))[0], SR)) for c in clips[2:4])

    again = add_works(_folder(tmp_path, "third", clips[:4]), "inc", embedder=None)
    assert again.version == 2 and not again.added and len(again.skipped) == 4  # no empty v3
    assert list_versions("inc") == [1, 2]


def test_interrupted_add_leaves_v1_loadable_and_no_half_version(clips, tmp_path, monkeypatch) -> None:
    add_works(_folder(tmp_path, "first", clips[:2]), "crash", embedder=None)

    def disk_full(self, path):  # the write step fails after some files of the new version exist
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="No space"):
        patch.setattr(fpm.FingerprintDB, "save", disk_full)
        add_works(_folder(tmp_path, "second", clips[2:4]), "crash", embedder=None)

    base = catalog_dir("crash")
    assert list_versions("crash") == [1]
    assert sorted(p.name for p in base.iterdir() if not p.name.startswith(".lock")) == ["v0001"]
    assert load_catalog("crash").version == 1

    # A hard kill (no cleanup at all) leaves a temp folder, or even a numbered folder without
    # catalog.json: readers skip both, and the next add sweeps the temp and never reuses the number.
    (base / ".tmp-deadbeef").mkdir()
    (base / ".tmp-deadbeef" / "works.json").write_text("[")
    (base / "v0002").mkdir()
    (base / "v0002" / "works.json").write_text("[")
    assert list_versions("crash") == [1] and load_catalog("crash").version == 1
    v3 = add_works(_folder(tmp_path, "third", clips[2:4]), "crash", embedder=None)
    assert v3.version == 3 and len(v3.works) == 4 and list_versions("crash") == [1, 3]
    assert not (base / ".tmp-deadbeef").exists()


def test_concurrent_adds_get_distinct_versions_and_keep_all_works(clips, tmp_path) -> None:
    folders = [_folder(tmp_path, f"part{i}", [clips[i]]) for i in range(3)]
    errors: list[BaseException] = []

    def run(folder: Path) -> None:
        try:
            add_works(folder, "race", embedder=None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert list_versions("race") == [1, 2, 3]
    latest = load_catalog("race")
    assert sorted(w.title for w in latest.works) == sorted(c.stem for c in clips[:3])
    assert sorted(w.work_id for w in latest.works) == [0, 1, 2]


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", ".hidden", "x" * 65, "sp ace"])
def test_names_never_become_unchecked_paths(bad, tmp_path) -> None:
    with pytest.raises(ValueError, match="invalid catalog name"):
        add_works(tmp_path, bad, embedder=None)
    with pytest.raises(ValueError, match="invalid catalog name"):
        load_catalog(bad)


def test_catalog_json_records_what_it_was_built_with(clips, tmp_path) -> None:
    add_works(_folder(tmp_path, "w", clips[:1]), "meta", embedder=None)
    info = json.loads((get_settings().home / "catalog" / "meta" / "v0001" / "catalog.json").read_text())
    assert info["name"] == "meta" and info["version"] == 1 and info["created_at"]
    assert info["fingerprint_scheme"]["scheme"] == "landmark-v1"
    assert info["counts"] == {"works": 1, "windows": 0, "hashes": info["counts"]["hashes"], "added_works": 1}
    assert info["threshold"] is None and info["calibration"] is None
    with pytest.raises(FileNotFoundError):
        load_catalog("meta", 7)
