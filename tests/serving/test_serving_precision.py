"""`musicops serve --precision int8`: the decoder runs quantised, and its assets say so."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.slow  # two musicops serve processes
def test_int8_server_records_its_precision_and_never_shares_fp32_assets(serve_home, keys, server) -> None:
    from helpers.servers import musicops_serve

    headers = {"Authorization": f"Bearer {keys.main}"}
    request = {"prompt": "precision check: muted trumpet", "duration_s": 0.5, "seed": 5}
    fp32 = httpx.post(f"{server.url}/v1/generate", headers=headers, json=request, timeout=600)
    assert fp32.status_code == 200, fp32.text
    int8_server = musicops_serve(serve_home, ["--model", "models:/tiny@champion", "--poll-interval", "0",
                                              "--precision", "int8"]).start()
    try:
        int8 = httpx.post(f"{int8_server.url}/v1/generate", headers=headers, json=request, timeout=600)
        assert int8.status_code == 200, int8.text
        (a,), (b,) = fp32.json()["assets"], int8.json()["assets"]
        assert not b["cache_hit"] and a["asset_id"] != b["asset_id"]
        audit = httpx.get(f"{int8_server.url}/v1/audit/{b['asset_id']}", headers=headers, timeout=60).json()
        assert audit["asset"]["params"]["precision"] == "int8"
        again = httpx.post(f"{int8_server.url}/v1/generate", headers=headers, json=request, timeout=600).json()
        assert again["assets"][0]["asset_id"] == b["asset_id"] and again["assets"][0]["cache_hit"]
    finally:
        int8_server.stop()
    fp32_audit = httpx.get(f"{server.url}/v1/audit/{a['asset_id']}", headers=headers, timeout=60).json()
    assert "precision" not in fp32_audit["asset"]["params"]


def test_a_bad_precision_is_refused_at_start() -> None:
    from musicops.serving.config import ServeConfig

    with pytest.raises(ValueError, match="precision must be one of"):
        ServeConfig(precision="fp8")
