"""The directory hash names model directories and embedder weights: its bytes are pinned."""

from __future__ import annotations

import hashlib

from musicops.hashing import directory_sha256


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"abc")
    (root / "sub" / "b.safetensors").write_bytes(b"xyz\n")
    return root


def test_directory_hash_is_name_newline_content_in_sorted_order(tmp_path) -> None:
    root = _tree(tmp_path / "model")
    expected = "c25a720069607172bfa8810a2d4c2c227c595f7e186711166eff1ae642b83bcf"
    assert directory_sha256(root) == expected
    assert hashlib.sha256(b"a.bin\nabcsub/b.safetensors\nxyz\n").hexdigest() == expected


def test_a_chosen_subset_and_renames_change_the_hash(tmp_path) -> None:
    root = _tree(tmp_path / "model")
    subset = directory_sha256(root, [root / "sub" / "b.safetensors"])
    assert subset == hashlib.sha256(b"sub/b.safetensors\nxyz\n").hexdigest()
    before = directory_sha256(root)
    (root / "a.bin").rename(root / "c.bin")
    assert directory_sha256(root) != before


def test_a_local_model_directory_keeps_the_identity_its_cache_keys_were_made_with(tmp_path) -> None:
    """Cache keys contain the model identity: these bytes were the `dir:` identity before the directory
    hash had one home (path then content, no separator); a change would orphan every cached asset."""
    from musicops.generation.planning import model_identity
    from musicops.models.loading import ResolvedModel

    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_bytes(b"config")
    (root / "sub" / "model.bin").write_bytes(b"weights\x00\x01")
    resolved = ResolvedModel(str(root), "directory", "model")
    assert model_identity(resolved) == "dir:c7541489f37d46f03fc486bd"
    assert hashlib.sha256(b"config.jsonconfigsub/model.binweights\x00\x01").hexdigest()[:24] == "c7541489f37d46f03fc486bd"
