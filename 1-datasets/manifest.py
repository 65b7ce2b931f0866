"""Scanning an audio folder into manifest rows, and publishing immutable, versioned manifests.

A manifest is the only way training and evaluation see a dataset: a Parquet table of files with
their content hashes and captions, stored as `DATASETS_DIR/NAME/vNNNN/manifest.parquet` next to a
`manifest.json` that records where it came from. Versions are never overwritten, so a run that
recorded `NAME@v3` and its dataset hash can always be reproduced.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musicops.audio.io import AUDIO_EXTENSIONS, FileProblem
from musicops.hashing import file_sha256
from musicops.names import safe_name
from musicops.store.files import atomic_path
from musicops.store.versions import claim_next_version, version_dir, version_numbers

if TYPE_CHECKING:
    import pandas as pd

    from musicops.config import Settings

MANIFEST_COLUMNS = (
    "path", "file_name", "sha256", "duration_s", "sample_rate", "channels",
    "loudness_lufs", "peak_dbfs", "caption",
)
MANIFEST_FILE = "manifest.parquet"
INFO_FILE = "manifest.json"
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_KEYS = ("caption", "text", "description")  # audiofolder datasets name the column variously
# Files that legitimately sit next to audio and are neither audio nor something to report.
SIDECAR_NAMES = {"readme", "readme.md", "readme.txt", "license", "license.txt", ".gitattributes"}


@dataclass
class ScanResult:
    """Good files become rows; every bad file becomes a problem and never a row."""

    directory: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # non-audio files that are not known sidecars

    def frame(self) -> pd.DataFrame:
        return manifest_frame(self.rows)


@dataclass(frozen=True)
class ManifestVersion:
    """One published, immutable manifest version."""

    name: str
    version: int
    path: Path  # the manifest.parquet
    dataset_hash: str

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def directory(self) -> Path:
        return self.path.parent


def validate_name(name: str) -> str:
    """Refuse dataset names that could escape the dataset directory or confuse a shell."""
    return safe_name(name, "dataset")


# --- scanning ------------------------------------------------------------------------------------

def scan_directory(directory: str | os.PathLike[str]) -> ScanResult:
    """Measure every audio file under `directory` (recursively, sorted) and attach its caption.

    Captions come from `metadata.jsonl`/`metadata.csv` (Hugging Face audiofolder: `file_name`
    relative to the metadata file's folder) or from a sidecar `NAME.txt`; metadata wins.
    """
    from musicops.audio.io import AudioError, read_audio
    from musicops.audio.measure import integrated_loudness, peak_dbfs

    root = Path(directory).expanduser().resolve()
    if not root.exists():
        raise FileNotFoundError(f"dataset directory not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    result = ScanResult(directory=root)
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    audio = [p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS]
    captions = _metadata_captions(root, files, result.problems)
    audio_stems = {p.with_suffix("") for p in audio}
    for path in files:
        if path.suffix.lower() in AUDIO_EXTENSIONS or path.name in METADATA_FILES:
            continue
        is_caption = path.suffix.lower() == ".txt" and path.with_suffix("") in audio_stems
        if not is_caption and path.name.lower() not in SIDECAR_NAMES:
            result.ignored.append(path.relative_to(root).as_posix())

    for path in audio:
        rel = path.relative_to(root).as_posix()
        try:
            decoded = read_audio(path)
        except AudioError as exc:
            result.problems.append(FileProblem(rel, exc.problem))
            continue
        if not decoded.samples.any():
            result.problems.append(FileProblem(rel, "digital silence (every sample is zero)"))
            continue
        caption = captions.get(path)
        if caption is None:
            sidecar = path.with_suffix(".txt")
            if sidecar.is_file():
                caption = sidecar.read_text(encoding="utf-8", errors="replace").strip()
        if not caption:
            result.problems.append(FileProblem(
                rel, f"no caption (add it to metadata.jsonl or write {path.with_suffix('.txt').name})"))
            continue
        result.rows.append({
            "path": str(path),
            "file_name": rel,
            "sha256": file_sha256(path),
            "duration_s": float(decoded.duration_s),
            "sample_rate": int(decoded.sample_rate),
            "channels": int(decoded.channels),
            "loudness_lufs": _finite_or_none(integrated_loudness(decoded.samples, decoded.sample_rate)),
            "peak_dbfs": _finite_or_none(peak_dbfs(decoded.samples)),
            "caption": caption,
        })
    return result


def _finite_or_none(value: float) -> float | None:
    """-inf loudness (silence, too short) becomes a null that validation reports by name."""
    return value if math.isfinite(value) else None


def _metadata_captions(root: Path, files: list[Path], problems: list[FileProblem]) -> dict[Path, str]:
    """Map absolute audio paths to captions from every metadata.jsonl/.csv under the root."""
    captions: dict[Path, str] = {}
    for meta in (p for p in files if p.name in METADATA_FILES):
        rel_meta = meta.relative_to(root).as_posix()
        try:
            records = list(_read_metadata(meta))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            problems.append(FileProblem(rel_meta, f"unreadable metadata ({exc})"))
            continue
        for line, record in records:
            where = f"{rel_meta} line {line}"
            if not isinstance(record, dict):
                problem = record if isinstance(record, str) else "not a JSON object"
                problems.append(FileProblem(where, problem))
                continue
            file_name = record.get("file_name")
            if not isinstance(file_name, str) or not file_name:
                problems.append(FileProblem(where, "missing 'file_name'"))
                continue
            target = (meta.parent / file_name).resolve()
            if not target.is_relative_to(root):
                problems.append(FileProblem(where, f"file_name {file_name!r} points outside the dataset"))
                continue
            if not target.is_file():
                problems.append(FileProblem(where, f"file_name {file_name!r} does not exist"))
                continue
            caption = next((record[k] for k in CAPTION_KEYS if isinstance(record.get(k), str)), None)
            if caption is not None and caption.strip():
                captions[target] = caption.strip()
    return captions


def _read_metadata(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, record); a malformed JSON line yields its error text instead of a dict."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            for number, row in enumerate(csv.DictReader(fh), start=2):
                yield number, row
        return
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"invalid JSON ({exc.msg})"


# --- frames and hashes ---------------------------------------------------------------------------

def manifest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the manifest's fixed column order and dtypes (also when empty)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(MANIFEST_COLUMNS))
    for column in ("duration_s", "loudness_lufs", "peak_dbfs"):
        frame[column] = frame[column].astype("float64")
    for column in ("sample_rate", "channels"):
        frame[column] = frame[column].astype("int64")
    return frame


def dataset_hash(rows: list[dict[str, Any]] | pd.DataFrame) -> str:
    """A content hash of the dataset: which audio (by sha256) with which caption under which name.

    Hashes a canonical JSON of plain Python values, not Parquet bytes, so it is stable across
    pandas/pyarrow versions and independent of row order and absolute paths.
    """
    if not isinstance(rows, list):
        rows = rows.to_dict(orient="records")
    triples = sorted((str(r["file_name"]), str(r["sha256"]), str(r["caption"])) for r in rows)
    canonical = json.dumps(triples, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- publishing ----------------------------------------------------------------------------------

def _settings(settings: Settings | None) -> Settings:
    from musicops.config import get_settings

    return settings or get_settings()


def _dataset_dir(name: str, settings: Settings | None) -> Path:
    return _settings(settings).datasets_dir / validate_name(name)


def publish_manifest(frame: pd.DataFrame | list[dict[str, Any]], name: str,
                     settings: Settings | None = None, *,
                     source: str | os.PathLike[str] | None = None) -> ManifestVersion:
    """Publish a new version of dataset `name`; an existing version is never touched.

    The version directory is claimed with an exclusive mkdir (two concurrent publishers get
    different numbers) and `manifest.json` is renamed in last, so a version without it is an
    interrupted publish that readers skip.
    """
    from musicops import code_version

    if isinstance(frame, list):
        frame = manifest_frame(frame)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest is missing columns: {', '.join(missing)}")
    frame = frame[list(MANIFEST_COLUMNS)].sort_values("file_name", kind="stable").reset_index(drop=True)
    base = _dataset_dir(name, settings)
    base.mkdir(parents=True, exist_ok=True)
    version_dir, version = claim_next_version(base)
    digest = dataset_hash(frame)
    frame = frame.assign(path=[_keep_audio(Path(str(p)), str(sha), base) for p, sha in zip(frame["path"], frame["sha256"],
                                                                                           strict=True)])
    parquet = version_dir / MANIFEST_FILE
    _atomic_write(parquet, lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow"))
    info = {
        "name": name,
        "version": version,
        "ref": f"{name}@v{version}",
        "dataset_hash": digest,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "n_rows": len(frame),
        "total_duration_s": round(float(frame["duration_s"].sum()), 3),
        "source": str(Path(source).resolve()) if source is not None else None,
        "code_version": code_version(),
        "columns": list(MANIFEST_COLUMNS),
        "parquet_sha256": file_sha256(parquet),
    }
    _atomic_write(version_dir / INFO_FILE,
                  lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8"))
    return ManifestVersion(name=name, version=version, path=parquet, dataset_hash=digest)


AUDIO_DIR = "audio"  # per dataset name: each audio content once, shared by its versions


def _keep_audio(source: Path, sha256: str, base: Path) -> str:
    """A published version owns its audio: the file is copied (a copy, not a hard link, so editing the
    ingested file in place cannot change a published version) to `<dataset>/audio/<sha256><ext>`,
    once per content, and the manifest refers to it relative to the version folder. The version then
    no longer depends on the ingested folder (moved, edited, another machine): no host path in it."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"manifest row for {source} has no sha256 to name its audio by")
    target = base / AUDIO_DIR / f"{sha256}{source.suffix.lower()}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        if file_sha256(target) != sha256:  # changed since it was scanned: never publish other audio
            target.unlink()
            raise ValueError(f"{source} changed after it was scanned (sha256 differs); ingest it again")
    return f"../{AUDIO_DIR}/{target.name}"


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Let `write` fill a temp file that then atomically becomes `path`."""
    with atomic_path(path) as tmp:
        write(str(tmp))


# --- reading -------------------------------------------------------------------------------------

def list_versions(name: str, settings: Settings | None = None) -> list[ManifestVersion]:
    """Complete versions of `name`, oldest first (interrupted publishes are skipped)."""
    base = _dataset_dir(name, settings)
    versions = []
    for number in version_numbers(base, INFO_FILE, MANIFEST_FILE):
        entry = version_dir(base, number)
        versions.append(ManifestVersion(name=name, version=number, path=entry / MANIFEST_FILE,
                                        dataset_hash=manifest_info(entry)["dataset_hash"]))
    return versions


def latest_version(name: str, settings: Settings | None = None) -> ManifestVersion:
    versions = list_versions(name, settings)
    if not versions:
        raise FileNotFoundError(
            f"dataset {name!r} has no published versions under {_dataset_dir(name, settings)}")
    return versions[-1]


def manifest_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `manifest.json` of a version directory or of the directory holding a manifest.parquet."""
    path = Path(path)
    directory = path.parent if path.suffix == ".parquet" else path
    info_path = directory / INFO_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"no {INFO_FILE} in {directory}")
    return json.loads(info_path.read_text(encoding="utf-8"))


def resolve_manifest(ref: str | os.PathLike[str], settings: Settings | None = None) -> Path:
    """Turn a parquet path, a version directory, or `NAME`, `NAME@vN`, `NAME@latest` into a parquet path."""
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        if (path / MANIFEST_FILE).is_file():
            return (path / MANIFEST_FILE).resolve()
        raise FileNotFoundError(f"{path} is a directory without {MANIFEST_FILE}")
    path_like = isinstance(ref, Path) or "/" in text or os.sep in text or text.endswith(".parquet")
    if path_like and "@" not in text:
        raise FileNotFoundError(f"manifest not found: {text}")
    name, _, selector = text.partition("@")
    validate_name(name)
    if selector in ("", "latest"):
        return latest_version(name, settings).path
    match = re.fullmatch(r"v?(\d+)", selector)
    if not match:
        raise ValueError(f"invalid manifest reference {text!r}: use NAME, NAME@vN or NAME@latest")
    wanted = int(match.group(1))
    for version in list_versions(name, settings):
        if version.version == wanted:
            return version.path
    known = ", ".join(f"v{v.version}" for v in list_versions(name, settings)) or "none"
    raise FileNotFoundError(f"dataset {name!r} has no version v{wanted} (published: {known})")


def load_manifest(ref: str | os.PathLike[str], settings: Settings | None = None) -> pd.DataFrame:
    """Read a manifest by path or reference; refuses one whose rows no longer match its recorded hash."""
    import pandas as pd

    path = resolve_manifest(ref, settings)
    frame = pd.read_parquet(path, engine="pyarrow")
    # published versions keep their audio and refer to it relative to the version folder
    frame["path"] = [p if Path(str(p)).is_absolute() else str((path.parent / str(p)).resolve()) for p in frame["path"]]
    if (path.parent / INFO_FILE).is_file():
        recorded = manifest_info(path).get("dataset_hash")
        if recorded and dataset_hash(frame) != recorded:
            raise ValueError(f"{path}: rows do not match the recorded dataset hash {recorded[:12]}… "
                             "(the manifest was modified after publishing)")
    return frame
