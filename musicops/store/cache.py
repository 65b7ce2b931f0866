"""Deterministic cache keys for generation requests.

A request is the same request when the normalised prompt, the generation parameters, the resolved
model version and the seed are the same; the key is a hash of exactly those. The model is fed the
normalised prompt (`generate_items`), so the key describes the model input exactly and a cache hit
is the audio a fresh generation would give. Stdlib only: the CLI and the API import this on every call.

Tenancy: each API tenant has a cache of its own. A tenant's key hashes the same payload plus
`"tenant": <name>`; without a tenant (batch files, the CLI, kfp, an unauthenticated local server)
the payload is exactly the one used before tenants existed, so every key already stored stays
valid (tests/store/test_store_cache.py pins literal keys). Folding the tenant into the key rather
than sharing one cache across tenants means a hit can only be the tenant's own earlier request: no
response field, audit record or latency can tell a tenant that someone else asked for the same
prompt, and asset ids (derived from keys) differ between tenants.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from typing import Any

# Bump when the key recipe changes so old and new keys can never collide.
CACHE_KEY_VERSION = 1

_HEX64 = re.compile(r"[0-9a-f]{64}")


def normalize_prompt(text: str) -> str:
    """Fold the spellings of one prompt to one string: "Lo-Fi  Beat\\n" and "lo-fi beat" hit the same cache.

    NFKC (compatibility forms like "ﬁ" or full-width letters), casefold (stronger than lower():
    "ß" -> "ss"), NFKC again because casefolding can denormalise, then whitespace collapsed.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be str, not {type(text).__name__}")
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def _canonical(value: Any, where: str) -> Any:
    """Reduce params to plain JSON types so equal settings always serialise to equal bytes."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cache key param {where} is not finite: {value!r}")
        # 3.0 and 3 ask the model for the same thing; -0.0 and 0.0 too.
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cache key param keys must be str, got {key!r} in {where}")
            out[key] = _canonical(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
    item = getattr(value, "item", None)  # numpy scalars, without importing numpy
    if callable(item):
        return _canonical(item(), where)
    raise TypeError(f"cache key param {where} has unsupported type {type(value).__name__}")


def cache_key(normalized_prompt: str, params: dict[str, Any], model_id: str, seed: int,
              tenant: str | None = None) -> str:
    """sha256 hex of canonical JSON of everything that determines the output (and whose cache it is).

    `model_id` must be the resolved version identity ("models:/name/3", "preset:musicgen-tiny",
    "dir:<sha>"), never an alias like "champion": an alias moves, and a cached asset must not.
    `tenant` None (batch, CLI) keeps the pre-tenancy payload byte for byte; a tenant name adds it.
    Raises ValueError if the prompt was not normalised, because a raw prompt silently splits the cache.
    """
    if normalize_prompt(normalized_prompt) != normalized_prompt:
        raise ValueError("cache_key needs normalize_prompt(prompt), got a raw prompt")
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("cache_key needs a non-empty resolved model_id")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be int, not {type(seed).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, not {type(params).__name__}")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise ValueError("tenant must be None or a non-empty name")
    payload: dict[str, Any] = {
        "v": CACHE_KEY_VERSION,
        "prompt": normalized_prompt,
        "params": _canonical(params, "params"),
        "model": model_id,
        "seed": int(seed),
    }
    if tenant is not None:
        payload["tenant"] = tenant
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def asset_id_for(key: str) -> str:
    """Derive the asset id from the cache key so a retried request gets the same id (exactly-once)."""
    if not isinstance(key, str) or not _HEX64.fullmatch(key):
        raise ValueError(f"not a cache key (64 lowercase hex): {key!r}")
    return "a_" + key[:24]
