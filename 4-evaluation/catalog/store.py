"""The versioned reference catalog on disk: `HOME/catalog/NAME/vNNNN/`.

Each version is complete and immutable in content: the window-embedding index (`vectors.faiss`, ids
= window ids), the window table (`windows.npz`: window id -> work id, offset), the works table
(`works.json`), the fingerprint postings (`fingerprints.npz`) and `catalog.json` (written last).
A new version is the previous one plus new works: it is built in a `.tmp-*` folder and renamed to
the next `vNNNN` in one step, under an exclusive lock on the catalog, so an interrupted add leaves
the previous version as the latest complete one and two concurrent adds neither collide on a number
nor drop each other's works. Calibration only rewrites `catalog.json` (atomically, same lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicops.audio.io import FileProblem
from musicops.errors import MusicopsError
from musicops.evaluation.catalog import alignment as al
from musicops.evaluation.catalog import fingerprint as fp
from musicops.hashing import file_sha256
from musicops.names import safe_name
from musicops.store.files import atomic_write, fsync_dir
from musicops.store.versions import version_dir, version_numbers

if TYPE_CHECKING:
    from musicops.config import Settings
    from musicops.evaluation.catalog.index import VectorIndex
    from musicops.evaluation.embedders import Embedder

INFO_FILE = "catalog.json"
WORKS_FILE = "works.json"
WINDOWS_FILE = "windows.npz"
VECTORS_FILE = "vectors.faiss"
FINGERPRINTS_FILE = "fingerprints.npz"
ALIGNMENT_FILE = "alignment.npz"
TMP_PREFIX = ".tmp-"
LOCK_FILE = ".lock"
# What a fingerprint database was built with; a catalog built differently cannot be matched against.
FINGERPRINT_SCHEME = {
    "scheme": "landmark-v1", "sample_rate": fp.SAMPLE_RATE, "n_fft": fp.N_FFT, "hop": fp.HOP,
    "peaks_per_second": fp.PEAKS_PER_SECOND, "fanout": fp.FANOUT, "max_dt": fp.MAX_DT, "max_df": fp.MAX_DF,
    "peak_radius": [fp.PEAK_TIME_RADIUS, fp.PEAK_FREQ_RADIUS], "min_bin": fp.MIN_BIN,
    "alignment": al.SCHEME,
}


class CatalogError(MusicopsError, ValueError):
    """A catalog operation that cannot proceed; `problems` names the bad input files, if any."""

    def __init__(self, message: str, problems: list[FileProblem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass(frozen=True)
class Work:
    """A reference work: where it came from, its content hash and length."""

    work_id: int
    path: str
    sha256: str
    duration_s: float
    title: str
    sample_rate: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CatalogVersion:
    """One loaded catalog version; after `add_works`, also what that call added, skipped and refused."""

    name: str
    version: int
    directory: Path
    info: dict[str, Any]
    works: list[Work]
    window_ids: np.ndarray  # int64
    window_work_ids: np.ndarray  # int32
    window_offsets_s: np.ndarray  # float32
    fingerprints: fp.FingerprintDB
    index: VectorIndex | None
    alignment: al.AlignmentDB = field(default_factory=al.AlignmentDB)
    added: list[Work] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the catalog (same sha256)
    problems: list[FileProblem] = field(default_factory=list)
    _embedder: Embedder | None = field(default=None, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def work_by_id(self) -> dict[int, Work]:
        return {w.work_id: w for w in self.works}

    @property
    def threshold(self) -> float | None:
        value = self.info.get("threshold")
        return None if value is None else float(value)

    @property
    def calibrated(self) -> bool:
        return self.info.get("calibration") is not None

    @property
    def embedder_name(self) -> str | None:
        prov = self.info.get("embedder")
        return None if prov is None else str(prov["embedder"])

    def embedder(self) -> Embedder | None:
        """The embedder the catalog was built with (rebuilt once, weights checked), or None."""
        if self._embedder is None and self.embedder_name is not None:
            from musicops.evaluation.embedders import get_embedder

            self._embedder = check_embedder(get_embedder(self.embedder_name), self.info["embedder"])
        return self._embedder

    def use_embedder(self, embedder: Embedder) -> None:
        """Reuse an embedder already in memory (must be the one the catalog was built with)."""
        if self.info.get("embedder") is None:
            raise CatalogError(f"catalog {self.ref} has no embeddings")
        self._embedder = check_embedder(embedder, self.info["embedder"])

    def window_lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Work ids and offsets for window ids (ids are dense 0..n-1 by construction)."""
        ids = np.asarray(ids, np.int64)
        safe = np.clip(ids, 0, max(0, self.window_ids.shape[0] - 1))
        if self.window_ids.shape[0] == 0:
            return np.full(ids.shape, -1, np.int32), np.zeros(ids.shape, np.float32)
        works = np.where(ids >= 0, self.window_work_ids[safe], -1)
        return works.astype(np.int32), self.window_offsets_s[safe]


# --- names and paths ------------------------------------------------------------------------------

def validate_name(name: str) -> str:
    """Refuse catalog names that could escape the catalog directory or confuse a shell."""
    return safe_name(name, "catalog")


def _settings(settings: Settings | None) -> Settings:
    from musicops.config import get_settings

    return settings or get_settings()


def catalog_dir(name: str, settings: Settings | None = None) -> Path:
    return _settings(settings).home / "catalog" / validate_name(name)


def list_versions(name: str, settings: Settings | None = None) -> list[int]:
    """Complete versions (those with catalog.json), oldest first; temp and half folders are ignored."""
    return version_numbers(catalog_dir(name, settings), INFO_FILE)


def load_catalog(name: str, version: int | None = None, settings: Settings | None = None) -> CatalogVersion:
    """Load a version (default: the latest complete one)."""
    versions = list_versions(name, settings)
    if not versions:
        raise FileNotFoundError(f"catalog {name!r} has no complete versions under {catalog_dir(name, settings)}")
    if version is None:
        version = versions[-1]
    elif int(version) not in versions:
        raise FileNotFoundError(f"catalog {name!r} has no complete version {version} (have {versions})")
    return _load_dir(name, int(version), version_dir(catalog_dir(name, settings), int(version)))


def _load_dir(name: str, version: int, directory: Path) -> CatalogVersion:
    from musicops.evaluation.catalog.index import VectorIndex

    info = json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))
    if info.get("fingerprint_scheme") != FINGERPRINT_SCHEME:
        raise CatalogError(f"{directory}: built with fingerprint scheme {info.get('fingerprint_scheme')}, "
                           f"this code uses {FINGERPRINT_SCHEME}; rebuild the catalog")
    works = [Work(**w) for w in json.loads((directory / WORKS_FILE).read_text(encoding="utf-8"))]
    with np.load(directory / WINDOWS_FILE, allow_pickle=False) as data:
        window_ids, window_work_ids, offsets = data["ids"], data["work_ids"], data["offsets_s"]
    index = VectorIndex.load(directory / VECTORS_FILE) if (directory / VECTORS_FILE).is_file() else None
    return CatalogVersion(name=name, version=version, directory=directory, info=info, works=works,
                          window_ids=window_ids.astype(np.int64), window_work_ids=window_work_ids.astype(np.int32),
                          window_offsets_s=offsets.astype(np.float32),
                          fingerprints=fp.FingerprintDB.load(directory / FINGERPRINTS_FILE), index=index,
                          alignment=al.AlignmentDB.load(directory / ALIGNMENT_FILE))


# --- adding works ---------------------------------------------------------------------------------

def add_works(directory: str | os.PathLike[str], name: str, settings: Settings | None = None,
              embedder: Embedder | str | None = None) -> CatalogVersion:
    """Add every new audio file under `directory` as a work; returns the new version (or the
    unchanged latest one when nothing was new).

    Bad files (corrupt, empty, NaN, mislabelled) are named in `.problems` and skipped; files whose
    sha256 is already in the catalog are listed in `.skipped`. `embedder` None = fingerprints only.
    Raises CatalogError when a new catalog would be empty.
    """
    from musicops.audio.io import AUDIO_EXTENSIONS

    validate_name(name)
    source = Path(directory)
    if not source.is_dir():
        raise CatalogError(f"{source}: not a directory")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(source).parts))
    if isinstance(embedder, str):
        from musicops.evaluation.embedders import get_embedder

        embedder = get_embedder(embedder)

    base = catalog_dir(name, settings)
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base):
        _sweep_temp(base)
        versions = list_versions(name, settings)
        previous = _load_dir(name, versions[-1], version_dir(base, versions[-1])) if versions else None
        if previous is not None:
            _check_same_embedder(previous, embedder)
        known = {w.sha256 for w in previous.works} if previous else set()
        next_work = max((w.work_id for w in previous.works), default=-1) + 1 if previous else 0

        added: list[_NewWork] = []
        skipped: list[str] = []
        problems: list[FileProblem] = []
        for path in files:
            item = _read_work(path, next_work, known, embedder, skipped, problems)
            if item is not None:
                added.append(item)
                known.add(item.work.sha256)
                next_work += 1

        if not added:
            if previous is None:
                raise CatalogError(f"{source}: no usable audio files to start catalog {name!r}"
                                   + (f" ({len(problems)} bad)" if problems else ""), problems)
            previous.skipped, previous.problems = skipped, problems
            return previous

        version = max(version_numbers(base), default=0) + 1  # a half folder's number is never reused
        tmp = base / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            _write_version(tmp, name, version, previous, added, embedder, str(source.resolve()))
            final = version_dir(base, version)
            if final.exists():  # only possible if someone bypassed the lock
                raise CatalogError(f"{final} appeared while adding; not overwriting it")
            os.rename(tmp, final)
            fsync_dir(base)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    result = _load_dir(name, version, final)
    result.added = [item.work for item in added]
    result.skipped, result.problems = skipped, problems
    if embedder is not None:
        result._embedder = embedder
    return result


@dataclass(frozen=True)
class _NewWork:
    work: Work
    fingerprint: fp.Fingerprint
    alignment: np.ndarray
    vectors: np.ndarray | None
    offsets: np.ndarray | None


def _read_work(path: Path, work_id: int, known: set[str], embedder: Embedder | None, skipped: list[str],
               problems: list[FileProblem]) -> _NewWork | None:
    """Decode, hash, fingerprint and embed one file; None (and a note) when it is a duplicate or bad."""
    from musicops.audio.io import AudioError, read_audio

    try:
        digest = file_sha256(path)
    except OSError as exc:
        problems.append(FileProblem(str(path), f"unreadable ({exc.strerror or exc})"))
        return None
    if digest in known:
        skipped.append(str(path))
        return None
    try:
        audio = read_audio(path)
    except AudioError as exc:
        problems.append(FileProblem(str(path), exc.problem))
        return None
    mono = audio.mono()
    if not np.any(mono):
        problems.append(FileProblem(str(path), "digital silence (nothing to match)"))
        return None
    print_fp = fp.fingerprint(mono, audio.sample_rate)
    vectors = offsets = None
    if embedder is not None:
        vectors, offsets = embedder.embed_windows(mono, audio.sample_rate)
    work = Work(work_id=work_id, path=str(path.resolve()), sha256=digest, duration_s=round(audio.duration_s, 4),
                title=path.stem, sample_rate=audio.sample_rate)
    return _NewWork(work, print_fp, al.features(mono, audio.sample_rate), vectors, offsets)


def _write_version(tmp: Path, name: str, version: int, previous: CatalogVersion | None,
                   added: list[_NewWork], embedder: Embedder | None, source: str) -> None:
    """Write every file of the new version into `tmp`; catalog.json last."""
    from musicops import code_version
    from musicops.evaluation.catalog.index import VectorIndex

    works = (previous.works if previous else []) + [item.work for item in added]
    db = (previous.fingerprints if previous else fp.FingerprintDB()).extend(
        [(item.work.work_id, item.fingerprint) for item in added])
    aligned = (previous.alignment if previous else al.AlignmentDB()).extend(
        [(item.work.work_id, item.alignment) for item in added])

    old_n = previous.window_ids.shape[0] if previous else 0
    new_work_ids = [np.full(item.vectors.shape[0], item.work.work_id, np.int32) for item in added
                    if item.vectors is not None]
    new_offsets = [item.offsets.astype(np.float32) for item in added if item.offsets is not None]
    n_new = int(sum(a.shape[0] for a in new_work_ids))
    window_ids = np.arange(old_n + n_new, dtype=np.int64)
    window_work_ids = np.concatenate([previous.window_work_ids if previous else np.zeros(0, np.int32)] + new_work_ids)
    offsets = np.concatenate([previous.window_offsets_s if previous else np.zeros(0, np.float32)] + new_offsets)

    index = None
    if embedder is not None:
        vectors = np.concatenate([item.vectors for item in added if item.vectors is not None])
        if previous is not None and previous.index is not None:
            index = previous.index  # loaded fresh for this add; growing it in place is safe
        else:
            index = VectorIndex(int(vectors.shape[1]))
        index.add(vectors, window_ids[old_n:])
        index.save(tmp / VECTORS_FILE)

    db.save(tmp / FINGERPRINTS_FILE)
    aligned.save(tmp / ALIGNMENT_FILE)
    with open(tmp / WINDOWS_FILE, "wb") as fh:
        np.savez(fh, ids=window_ids, work_ids=window_work_ids, offsets_s=offsets)
    _write_json(tmp / WORKS_FILE, [w.to_dict() for w in works])

    prev_info = previous.info if previous else {}
    info = {
        "name": name,
        "version": version,
        "ref": f"{name}@v{version}",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "previous_version": previous.version if previous else None,
        "source": source,
        "embedder": embedder.provenance().to_dict() if embedder is not None else None,
        "fingerprint_scheme": FINGERPRINT_SCHEME,
        "counts": {"works": len(works), "windows": int(window_ids.shape[0]), "hashes": len(db),
                   "added_works": len(added)},
        "index": None if index is None else {"kind": index.kind, "dim": index.dim, "ntotal": index.ntotal},
        # A calibration describes the works it was measured on: a new version starts uncalibrated,
        # keeping the previous threshold only as a hint.
        "threshold": None,
        "fusion": None,
        "calibration": None,
        "previous_calibration": (
            {"version": previous.version, "threshold": prev_info.get("threshold")}
            if previous is not None and prev_info.get("calibration") else None),
    }
    _write_json(tmp / INFO_FILE, info)


def update_info(catalog: CatalogVersion, updates: dict[str, Any], settings: Settings | None = None) -> None:
    """Atomically merge `updates` into a version's catalog.json (metadata only, under the catalog lock)."""
    directory = catalog.directory
    with _locked(directory.parent):
        info = json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))
        info.update(updates)
        _write_json(directory / INFO_FILE, info)
    catalog.info = info


# --- helpers --------------------------------------------------------------------------------------

def check_embedder(embedder: Embedder, recorded: dict[str, Any]) -> Embedder:
    """Refuse an embedder whose windows or weights differ from the catalog's (vectors would not compare)."""
    now = embedder.provenance().to_dict()
    diffs = [k for k in ("embedder", "weights_sha256", "sample_rate", "window_s", "hop_s")
             if now.get(k) != recorded.get(k)]
    if diffs:
        raise CatalogError("embedder does not match the catalog's: " + ", ".join(
            f"{k} {now.get(k)!r} != {recorded.get(k)!r}" for k in diffs))
    return embedder


def _check_same_embedder(previous: CatalogVersion, embedder: Embedder | None) -> None:
    recorded = previous.info.get("embedder")
    if (recorded is None) != (embedder is None):
        have = "no embedder" if recorded is None else f"embedder {recorded['embedder']!r}"
        raise CatalogError(f"catalog {previous.ref} was built with {have}; add with the same one")
    if embedder is not None and recorded is not None:  # both or neither, checked above
        check_embedder(embedder, recorded)


def _sweep_temp(base: Path) -> None:
    """Remove temp folders left by crashed adds (safe: called with the lock held)."""
    for entry in base.iterdir():
        if entry.name.startswith(TMP_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """An exclusive advisory lock on the catalog (POSIX flock; a no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(base / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n", mode=0o644)  # catalog files are shared
