"""Hub ids resolved through huggingface_hub, tested offline against a pre-populated HF cache.

The cache is laid out exactly as huggingface_hub's `snapshot_download` writes it (file_download.py,
_snapshot_download.py, _tree_cache.py):

    <HF_HOME>/hub/models--OWNER--NAME/
        blobs/<etag>                    LFS files: sha256 of the content; others: their git blob sha1
        refs/main                       the commit sha (no newline)
        snapshots/<commit>/<file>       relative symlinks ../../blobs/<etag>
        trees/<commit>.json             the commit's file listing (format_version 1)

so the real client code finds the snapshots (and checks them complete) with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from musicops.models.hub import (
    HubModelNotFoundError,
    HubRef,
    hub_cache_dir,
    hub_offline,
    is_hub_id,
    parse_hub_id,
    snapshot,
    with_revision,
)

MUSICGEN = "facebook/musicgen-small"
CLAP = "laion/clap-htsat-unfused"
COMMIT_MAIN = "5a4f2c1d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a41"
COMMIT_OTHER = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".h5", ".msgpack")
CARD = "---\nlicense: cc-by-nc-4.0\ntags:\n- musicgen\n---\n# tiny stand-in\n"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_snapshot(cache: Path, repo_id: str, commit: str, source: Path, refs: tuple[str, ...] = ("main",),
                   extra: dict[str, bytes] | None = None) -> Path:
    """Put the files of `source` into `cache` as commit `commit` of model repo `repo_id`, the way
    huggingface_hub's snapshot_download does; `refs` (branches/tags) point at the commit."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    files = {p.relative_to(source).as_posix(): p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file()}
    files.update(extra or {})
    files.setdefault(".gitattributes", b"".join(b"*%s filter=lfs diff=lfs merge=lfs -text\n" % s.encode()
                                                for s in LFS_SUFFIXES))
    tree = {}
    for name, data in files.items():
        if name.endswith(LFS_SUFFIXES):  # stored with git-lfs: the etag is the content's sha256
            etag = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{etag}\nsize {len(data)}\n".encode()
            tree[name] = {"size": len(pointer), "blob_id": _git_blob_sha1(pointer), "lfs_sha256": etag,
                          "lfs_size": len(data)}
        else:  # a plain git file: the etag is its git blob sha1
            etag = _git_blob_sha1(data)
            tree[name] = {"size": len(data), "blob_id": etag}
        blob = storage / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        pointer_path = storage / "snapshots" / commit / name
        pointer_path.parent.mkdir(parents=True, exist_ok=True)
        pointer_path.symlink_to(os.path.relpath(blob, pointer_path.parent))  # as _create_symlink does
    for ref in refs:
        (storage / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    (storage / "trees").mkdir(exist_ok=True)
    (storage / "trees" / f"{commit}.json").write_text(
        json.dumps({"format_version": 1, "files": dict(sorted(tree.items()))}, indent=1))
    return storage / "snapshots" / commit


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME whose hub cache holds the tiny MusicGen preset as facebook/musicgen-small (main,
    plus a second commit from another seed under tag v2) and a tiny random-init CLAP as
    laion/clap-htsat-unfused."""
    from musicops.evaluation.embedders import build_tiny_clap
    from musicops.models.musicgen import TransformersMusicGen

    root = tmp_path_factory.mktemp("hf")
    cache = root / "home" / "hub"
    saved = root / "saved"
    TransformersMusicGen.from_preset("musicgen-tiny").save(saved / "main")
    TransformersMusicGen.from_preset("musicgen-tiny", seed=1).save(saved / "other")
    write_snapshot(cache, MUSICGEN, COMMIT_MAIN, saved / "main", extra={"README.md": CARD.encode()})
    write_snapshot(cache, MUSICGEN, COMMIT_OTHER, saved / "other", refs=("v2",))
    model, processor = build_tiny_clap(0)
    model.save_pretrained(saved / "clap")
    processor.save_pretrained(saved / "clap")
    write_snapshot(cache, CLAP, COMMIT_MAIN, saved / "clap")
    return root / "home"


@pytest.fixture
def offline_hub(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return hf_home


def cli(*args: str, hf_home: Path, state: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "MUSICOPS_HOME": str(state),
           "MUSICOPS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "musicops.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def assets(state: Path) -> list:
    from musicops.config import Settings
    from musicops.store.provenance import ProvenanceDB

    db = ProvenanceDB.from_settings(Settings(home=state))
    try:
        return db.list_assets()
    finally:
        db.close()


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("reference, expected", [
    ("facebook/musicgen-small", HubRef("facebook/musicgen-small")),
    ("facebook/musicgen-small@main", HubRef("facebook/musicgen-small", "main")),
    ("hub:facebook/musicgen-small@" + COMMIT_MAIN, HubRef("facebook/musicgen-small", COMMIT_MAIN)),
    ("owner/name@refs/pr/1", HubRef("owner/name", "refs/pr/1")),
    ("musicgen-tiny", None), ("clap-tiny", None), ("models:/musicops-musicgen/3", None),
    ("models:/musicops-musicgen@champion", None), ("./facebook/musicgen-small", None), ("/abs/path", None),
    ("~/models/x", None), ("a/b/c", None), ("owner--x/name", None), ("owner/na..me", None), ("owner/", None),
    ("owner/name@", None), ("owner/name@bad rev", None), ("C:/models/x", None), ("owner/name.git", None),
])
def test_hub_ids_are_told_from_presets_uris_and_paths(reference: str, expected: HubRef | None) -> None:
    assert parse_hub_id(reference) == expected


def test_an_existing_local_directory_wins_over_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("facebook/musicgen-small")
    (tmp_path / "facebook" / "musicgen-small").mkdir(parents=True)
    assert not is_hub_id("facebook/musicgen-small")
    assert is_hub_id("hub:facebook/musicgen-small")  # the explicit prefix is always the hub


def test_revision_option_folds_into_the_id() -> None:
    assert with_revision(MUSICGEN, None) == MUSICGEN
    assert with_revision(MUSICGEN, "v2") == f"{MUSICGEN}@v2"
    assert with_revision(f"{MUSICGEN}@v2", "v2") == f"{MUSICGEN}@v2"
    with pytest.raises(ValueError, match="already names revision"):
        with_revision(f"{MUSICGEN}@main", "v2")
    with pytest.raises(ValueError, match="hub ids"):
        with_revision("musicgen-tiny", "v2")


def test_environment_is_read_at_call_time_in_the_hub_clients_order(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    assert hub_cache_dir({"HF_HOME": home}) == tmp_path / "home" / "hub"
    assert hub_cache_dir({"HF_HOME": home, "HUGGINGFACE_HUB_CACHE": "/legacy"}) == Path("/legacy")
    assert hub_cache_dir({"HF_HOME": home, "HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HUB_CACHE": "/new"}) == Path("/new")
    assert hub_cache_dir({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/huggingface/hub")
    assert hub_offline({"HF_HUB_OFFLINE": "1"}) and hub_offline({"TRANSFORMERS_OFFLINE": "true"})
    assert not hub_offline({}) and not hub_offline({"HF_HUB_OFFLINE": "0"})


# ----------------------------------------------------------------- snapshots
def test_snapshot_resolves_branches_tags_and_shas_from_the_cache(offline_hub: Path) -> None:
    main = snapshot(MUSICGEN)
    assert (main.commit, main.revision) == (COMMIT_MAIN, "main")
    assert main.directory == offline_hub / "hub" / "models--facebook--musicgen-small" / "snapshots" / COMMIT_MAIN
    assert (main.directory / "model.safetensors").is_symlink()
    assert main.uri == f"hub:{MUSICGEN}@{COMMIT_MAIN}"
    assert snapshot(f"{MUSICGEN}@v2").commit == COMMIT_OTHER
    assert snapshot(f"{MUSICGEN}@{COMMIT_OTHER}").commit == COMMIT_OTHER
    assert snapshot(main.uri).commit == COMMIT_MAIN  # a pinned URI resolves to itself


def test_missing_id_offline_is_a_clear_error(offline_hub: Path) -> None:
    with pytest.raises(HubModelNotFoundError) as caught:
        snapshot("facebook/musicgen-large")
    message = str(caught.value)
    for part in ("'facebook/musicgen-large'", "'main'", str(offline_hub / "hub"), "HF_HUB_OFFLINE",
                 "hf download facebook/musicgen-large"):
        assert part in message
    assert caught.value.exit_code == 2
    with pytest.raises(HubModelNotFoundError, match="revision 'v9'"):
        snapshot(f"{MUSICGEN}@v9")


def test_an_incomplete_snapshot_is_refused_not_half_loaded(offline_hub: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    cache = tmp_path / "hub"
    shutil.copytree(offline_hub / "hub" / "models--facebook--musicgen-small", cache / "models--facebook--musicgen-small",
                    symlinks=True)
    (cache / "models--facebook--musicgen-small" / "snapshots" / COMMIT_MAIN / "model.safetensors").unlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # wins over HF_HOME
    with pytest.raises(HubModelNotFoundError, match=r"model\.safetensors"):
        snapshot(MUSICGEN)


def test_resolve_and_load_a_hub_model(offline_hub: Path) -> None:
    from musicops.generation.planning import model_identity
    from musicops.models.loading import load_model, resolve_model

    resolved = resolve_model(MUSICGEN)
    assert (resolved.kind, resolved.name, resolved.version, resolved.revision) == ("hub", MUSICGEN, COMMIT_MAIN, "main")
    assert resolved.pinned_uri == f"hub:{MUSICGEN}@{COMMIT_MAIN}"
    assert model_identity(resolved) == f"hub:{MUSICGEN}@{COMMIT_MAIN}"
    assert model_identity(resolve_model(f"{MUSICGEN}@v2")) == f"hub:{MUSICGEN}@{COMMIT_OTHER}"
    pinned = resolve_model(resolved.pinned_uri)  # the recorded URI resolves to the very same snapshot
    assert (pinned.kind, pinned.reference, pinned.pinned_uri) == ("hub", resolved.reference, resolved.pinned_uri)
    model = load_model(resolved)
    assert (model.info.name, model.info.version, model.info.source) == (MUSICGEN, COMMIT_MAIN, resolved.pinned_uri)
    from musicops.training.run import licence_of

    assert licence_of(resolved) == "cc-by-nc-4.0"  # read from the snapshot's model card


def test_registration_tags_name_the_hub_commit() -> None:
    from musicops.registry import hub_version_tags

    assert hub_version_tags(f"hub:{MUSICGEN}@{COMMIT_MAIN}") == {"musicops.hub.repo_id": MUSICGEN,
                                                                 "musicops.hub.commit": COMMIT_MAIN}
    assert hub_version_tags("models:/x/1") == {} and hub_version_tags(None) == {}


def test_hub_clap_embedder_is_the_cached_snapshot(offline_hub: Path) -> None:
    from musicops.evaluation.embedders import ClapEmbedder, get_embedder

    embedder = get_embedder(f"clap:{CLAP}")
    assert embedder.name == f"clap:{CLAP}@{COMMIT_MAIN}"
    assert get_embedder(embedder.name).weights_sha256 == embedder.weights_sha256  # the recorded name rebuilds it
    clip = np.sin(np.linspace(0, 400, 48_000)).astype(np.float32)
    preset = ClapEmbedder.from_preset()
    np.testing.assert_allclose(embedder.embed_audio([clip], 48_000), preset.embed_audio([clip], 48_000), atol=1e-5)
    with pytest.raises(HubModelNotFoundError, match="laion/larger_clap_music"):
        get_embedder("clap:laion/larger_clap_music")
    with pytest.raises(ValueError, match="clap:OWNER/NAME"):
        get_embedder("clap:not a hub id")


# ------------------------------------------------------------------- the CLI
@pytest.mark.slow  # three CLI subprocesses generating with the tiny model, ~40 s
def test_models_generate_with_a_hub_id_offline_records_the_snapshot_sha(hf_home: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = cli("models", "generate", "--model", MUSICGEN, "--prompt", "x", "--duration", "0.5",
               "--out", str(tmp_path / "out"), hf_home=hf_home, state=state, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    [record] = assets(state)
    assert (record.model_name, record.model_version) == (MUSICGEN, COMMIT_MAIN)
    assert record.model_uri == f"hub:{MUSICGEN}@{COMMIT_MAIN}"

    other = cli("models", "generate", "--model", MUSICGEN, "--revision", "v2", "--prompt", "x", "--duration", "0.5",
                "--out", str(tmp_path / "out"), hf_home=hf_home, state=state, cwd=tmp_path)
    assert other.returncode == 0, other.stdout + other.stderr
    records = {r.model_version: r for r in assets(state)}
    assert set(records) == {COMMIT_MAIN, COMMIT_OTHER}  # another snapshot: its own asset and cache key
    assert records[COMMIT_OTHER].cache_key != records[COMMIT_MAIN].cache_key
    assert records[COMMIT_OTHER].model_uri == f"hub:{MUSICGEN}@{COMMIT_OTHER}"

    missing = cli("models", "generate", "--model", "facebook/musicgen-large", "--prompt", "x", "--duration", "0.5",
                  hf_home=hf_home, state=state, cwd=tmp_path)
    assert missing.returncode == 2
    text = " ".join(missing.stderr.split())
    assert "facebook/musicgen-large" in text and "not in the Hugging Face cache" in text, text
    assert "Traceback" not in missing.stderr


@pytest.mark.slow  # two CLI subprocesses, one generating a 3-prompt suite with the tiny model
def test_eval_regression_with_a_hub_clap_offline(hf_home: Path, tmp_path: Path) -> None:
    suite = tmp_path / "suite.json"
    base = json.loads((Path(__file__).parents[2] / "4-evaluation" / "suites" / "regression-v1.json").read_text())
    base["prompts"] = [{**p, "duration_s": 0.5} for p in base["prompts"][:3]]
    base["thresholds"]["bootstrap_samples"] = 200
    suite.write_text(json.dumps(base))
    state, out = tmp_path / "state", tmp_path / "report"
    done = cli("eval", "regression", "--candidate", "musicgen-tiny", "--baseline", "musicgen-tiny", "--suite",
               str(suite), "--out", str(out), "--embedder", f"clap:{CLAP}", hf_home=hf_home, state=state, cwd=tmp_path)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # evaluated (the random CLAP may miss a floor)
    report = json.loads((out / "regression.json").read_text())
    assert report["provenance"]["embedder"] == f"clap:{CLAP}@{COMMIT_MAIN}"
    assert json.loads((out / "suite.json").read_text())["embedder"] == f"clap:{CLAP}@{COMMIT_MAIN}"

    missing = cli("eval", "regression", "--candidate", "musicgen-tiny", "--baseline", "musicgen-tiny", "--suite",
                  str(suite), "--out", str(tmp_path / "r2"), "--embedder", "clap:laion/larger_clap_music",
                  hf_home=hf_home, state=state, cwd=tmp_path)
    assert missing.returncode == 2
    text = " ".join(missing.stderr.split()) + " ".join(missing.stdout.split())
    assert "laion/larger_clap_music" in text and "not in the Hugging Face cache" in text, text


@pytest.mark.slow  # logs and registers an MLflow model, ~10 s
def test_models_import_of_a_hub_id_tags_the_registered_version_with_its_commit(offline_hub: Path) -> None:
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from musicops.cli import app
    from musicops.registry import configure_mlflow

    done = CliRunner().invoke(app, ["models", "import", MUSICGEN, "--revision", "v2", "--name", "from-hub"])
    assert done.exit_code == 0, done.output
    configure_mlflow()
    tags = MlflowClient().get_model_version("from-hub", "1").tags
    assert tags["musicops.base_model"] == f"hub:{MUSICGEN}@{COMMIT_OTHER}"
    assert (tags["musicops.hub.repo_id"], tags["musicops.hub.commit"]) == (MUSICGEN, COMMIT_OTHER)
    # the plain-file copy MLflow logged from is gone: the registered artifacts are the one copy
    from musicops.config import get_settings

    imports = get_settings().home / "imports"
    assert not imports.exists() or not any(imports.iterdir())
