"""Cache keys decide what counts as "already generated"; a wrong key means wrong audio or wasted GPU."""

from __future__ import annotations

import subprocess
import sys

import pytest

from musicops.store.cache import asset_id_for, cache_key, normalize_prompt


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ﬁne piano", "fine piano"),  # NFKC ligature
        ("ＬＯＦＩ　Beat", "lofi beat"),  # full-width letters and ideographic space
        ("Straße", "strasse"),  # casefold, not lower()
        ("  Calm\tpiano\n\nwith   rain \r\n", "calm piano with rain"),
        ("a\u00a0b", "a b"),  # no-break space
        ("", ""),
    ],
)
def test_normalize_prompt(raw: str, expected: str) -> None:
    assert normalize_prompt(raw) == expected


@pytest.mark.parametrize("raw", ["ﬁne ẞig Ǆ", "ＬＯＦＩ　Beat", "Straße\tİstanbul", "ΣΊΣΥΦΟΣ"])
def test_normalize_prompt_is_idempotent(raw: str) -> None:
    once = normalize_prompt(raw)
    assert normalize_prompt(once) == once


def _key(**overrides: object) -> str:
    args: dict[str, object] = {
        "normalized_prompt": "calm piano",
        "params": {"duration_s": 8.5, "guidance_scale": 3.0, "top_k": 250},
        "model_id": "models:/musicops-musicgen/3",
        "seed": 7,
    }
    args.update(overrides)
    return cache_key(**args)  # type: ignore[arg-type]


def test_cache_key_is_stable_hex() -> None:
    key = _key()
    assert key == _key()
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)


def test_cache_key_is_stable_across_processes() -> None:
    """No hash randomisation or dict-order dependence: another interpreter computes the same key."""
    code = (
        "from musicops.store.cache import cache_key;"
        "print(cache_key('calm piano', {'top_k': 250, 'guidance_scale': 3.0, 'duration_s': 8.5},"
        " 'models:/musicops-musicgen/3', 7))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _key()


def test_cache_key_ignores_param_order_and_int_float_spelling() -> None:
    reordered = {"top_k": 250, "guidance_scale": 3, "duration_s": 8.5}
    assert _key(params=reordered) == _key()
    nested = {"a": {"y": 1, "x": [1.0, 2]}}
    assert _key(params=nested) == _key(params={"a": {"x": [1, 2.0], "y": 1}})


@pytest.mark.parametrize(
    "change",
    [
        {"normalized_prompt": "calm piano rain"},
        {"params": {"duration_s": 8.5, "guidance_scale": 3.5, "top_k": 250}},
        {"params": {"duration_s": 8.5, "guidance_scale": 3.0, "top_k": 250, "temperature": 1.1}},
        {"params": {"duration_s": 8.5, "guidance_scale": 3.0}},
        {"model_id": "models:/musicops-musicgen/4"},
        {"model_id": "preset:musicgen-tiny"},
        {"seed": 8},
    ],
)
def test_cache_key_changes_with_each_component(change: dict[str, object]) -> None:
    assert _key(**change) != _key()


def test_cache_key_distinguishes_bool_from_int_and_tiny_float_changes() -> None:
    assert _key(params={"flag": True}) != _key(params={"flag": 1})
    assert _key(params={"t": 0.1}) != _key(params={"t": 0.1 + 1e-12})


def test_cache_key_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="normalize_prompt"):
        _key(normalized_prompt="Calm  Piano")
    with pytest.raises(ValueError, match="not finite"):
        _key(params={"t": float("nan")})
    with pytest.raises(ValueError):
        _key(model_id="")
    with pytest.raises(TypeError):
        _key(seed=True)
    with pytest.raises(TypeError):
        _key(params={"x": object()})


def test_asset_id_is_derived_from_key() -> None:
    key = _key()
    assert asset_id_for(key) == "a_" + key[:24] == asset_id_for(key)
    assert asset_id_for(_key(seed=8)) != asset_id_for(key)
    with pytest.raises(ValueError):
        asset_id_for("../../etc/passwd")


def test_cache_module_is_stdlib_only() -> None:
    """The API imports it on every request path; it must not drag sqlalchemy or torch in."""
    code = (
        "import sys, musicops.store.cache;"
        "heavy = {'sqlalchemy', 'torch', 'numpy', 'transformers', 'mlflow'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
