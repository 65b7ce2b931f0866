"""Issue #14 (tenancy, cache) against the real `musicops serve` process of conftest: a key sees only its
tenant's assets, audit records and jobs (404 otherwise, like an id that does not exist), an admin key
sees all, a cache hit never crosses tenants, signed URLs are bound to the asset's tenant, tags are
the request's own; and a key database from before tenancy migrates in place (SQLite and PostgreSQL).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from musicops.config import get_settings
from musicops.serving.keys import KeyStore


@dataclass
class TenantKeys:
    acme: str  # tenant acme
    acme_2: str  # a second key of tenant acme
    globex: str  # tenant globex
    admin: str  # admin scope (tenant ops)


@pytest.fixture(scope="module")
def tenant_keys(serve_home: Path, keys) -> TenantKeys:  # noqa: ANN001 - conftest's Keys (the server's key db)
    store = KeyStore.for_settings(get_settings(serve_home))
    try:
        return TenantKeys(acme=store.create("acme-1", tenant="acme")[1], acme_2=store.create("acme-2", tenant="acme")[1],
                          globex=store.create("globex-1", tenant="globex")[1],
                          admin=store.create("ops-admin", tenant="ops", admin=True)[1])
    finally:
        store.close()


def _as(server, key: str) -> httpx.Client:  # noqa: ANN001 - ServerProcess
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _finished(client: httpx.Client, job: dict) -> dict:
    deadline = time.monotonic() + 60
    while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['job_id']}").json()
    assert job["state"] == "succeeded", job
    return job


def _samples(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data))[0]


@pytest.mark.slow  # musicops serve processes
def test_another_tenants_asset_audit_and_job_are_404_and_an_admin_sees_all(server, keys, tenant_keys) -> None:
    with _as(server, tenant_keys.acme) as acme, _as(server, tenant_keys.acme_2) as acme_2, \
            _as(server, tenant_keys.globex) as globex, _as(server, keys.main) as main, \
            _as(server, tenant_keys.admin) as admin:
        made = acme.post("/v1/generate", json={"prompt": "tenancy probe", "duration_s": 0.5, "seed": 5})
        assert made.status_code == 200, made.text
        asset = made.json()["assets"][0]
        asset_id = asset["asset_id"]
        job = _finished(acme, acme.post("/v1/jobs", json={"prompt": "tenancy job", "duration_s": 0.5}).json())
        job_asset = job["result"]["assets"][0]["asset_id"]
        never = "a_" + "f" * 24

        for outsider in (globex, main):  # another tenant, and a pre-existing key (a tenant of its own)
            for path in (f"/v1/audit/{asset_id}", f"/v1/audit/{job_asset}", f"/v1/jobs/{job['job_id']}",
                         f"/v1/assets/{asset_id}", f"/v1/assets/{job_asset}?fmt=flac"):
                refused = outsider.get(path)
                assert refused.status_code == 404, (path, refused.text)
                assert refused.json()["error"]["code"] == "not_found"
            # ... exactly as for an id that exists nowhere: nothing tells them apart.
            for real, unknown in ((f"/v1/audit/{asset_id}", f"/v1/audit/{never}"),
                                  (f"/v1/assets/{asset_id}", f"/v1/assets/{never}"),
                                  (f"/v1/jobs/{job['job_id']}", "/v1/jobs/j_" + "0" * 32)):
                a, b = outsider.get(real).json()["error"], outsider.get(unknown).json()["error"]
                assert a["message"].replace(real.rsplit("/", 1)[1], "ID") == \
                    b["message"].replace(unknown.rsplit("/", 1)[1], "ID")

        for insider in (acme, acme_2, admin):  # the tenant's keys, and the admin scope
            record = insider.get(f"/v1/audit/{asset_id}")
            assert record.status_code == 200 and record.json()["asset"]["tenant"] == "acme"
            assert record.json()["asset"]["user"] == "key:acme-1"
            assert insider.get(f"/v1/jobs/{job['job_id']}").json()["state"] == "succeeded"
            by_key = insider.get(f"/v1/assets/{asset_id}")
            assert by_key.status_code == 200 and by_key.content == httpx.get(asset["audio_url"], timeout=60).content
            # Fresh signed URLs from the audit record work without a key.
            assert httpx.get(record.json()["urls"]["flac"], timeout=60).status_code == 200
        assert admin.get(f"/v1/audit/{never}").status_code == 404
        # A bad key is still refused as such, not served as "no such asset".
        assert httpx.get(f"{server.url}/v1/assets/{asset_id}", headers={"X-API-Key": "mko_nope"}, timeout=60).status_code == 401


@pytest.mark.slow  # musicops serve processes
def test_a_cache_hit_never_crosses_tenants_and_tags_are_the_requests_own(server, tenant_keys, serve_home) -> None:
    request = {"prompt": "Shared  Prompt for two tenants", "duration_s": 0.5, "seed": 21}
    with _as(server, tenant_keys.acme) as acme, _as(server, tenant_keys.globex) as globex, \
            _as(server, tenant_keys.acme_2) as acme_2:
        first = acme.post("/v1/generate", json={**request, "tags": ["first"]}).json()["assets"][0]
        assert not first["cache_hit"] and first["tags"] == ["first"]
        # globex asks for the same thing: generated for globex, no hint that acme asked first.
        other = globex.post("/v1/generate", json={**request, "prompt": "shared prompt for two tenants"}).json()
        theirs = other["assets"][0]
        assert not theirs["cache_hit"] and theirs["asset_id"] != first["asset_id"] and theirs["tags"] == []
        record = globex.get(f"/v1/audit/{theirs['asset_id']}").json()["asset"]
        assert record["tenant"] == "globex" and record["user"] == "key:globex-1"
        assert record["prompt"] == "shared prompt for two tenants"
        # The same model input gives the same audio either way: a per-tenant cache changes no sound.
        assert np.array_equal(_samples(httpx.get(first["audio_url"], timeout=60).content),
                              _samples(httpx.get(theirs["audio_url"], timeout=60).content))
        # Each tenant's own history: hits, with this request's tags (tags are not in the key).
        again = globex.post("/v1/generate", json={**request, "tags": ["later"]}).json()["assets"][0]
        assert again["cache_hit"] and again["asset_id"] == theirs["asset_id"] and again["tags"] == ["later"]
        mate = acme_2.post("/v1/generate", json={**request, "tags": ["mate"]}).json()["assets"][0]
        assert mate["cache_hit"] and mate["asset_id"] == first["asset_id"] and mate["tags"] == ["mate"]
        job = _finished(acme, acme.post("/v1/jobs", json={**request, "tags": ["job-tag"]}).json())
        assert job["result"]["assets"][0]["cache_hit"] and job["result"]["assets"][0]["tags"] == ["job-tag"]


@pytest.mark.slow  # musicops serve processes
def test_signed_urls_are_bound_to_the_assets_tenant(server, tenant_keys, serve_home) -> None:
    from musicops.serving.signing import UrlSigner

    with _as(server, tenant_keys.acme) as acme, _as(server, tenant_keys.globex) as globex:
        mine = acme.post("/v1/generate", json={"prompt": "bound url", "duration_s": 0.5, "seed": 2}).json()
        theirs = globex.post("/v1/generate", json={"prompt": "bound url 2", "duration_s": 0.5, "seed": 2}).json()
    mine_id, their_url = mine["assets"][0]["asset_id"], theirs["assets"][0]["audio_url"]
    assert httpx.get(mine["assets"][0]["audio_url"], timeout=60).status_code == 200
    # globex's own valid signature, moved onto acme's asset: refused.
    query = their_url.split("?", 1)[1]
    moved = httpx.get(f"{server.url}/v1/assets/{mine_id}?{query}", timeout=60)
    assert moved.status_code == 403 and moved.json()["error"]["code"] == "bad_signature"
    # With the server's secret: a URL minted for (globex, acme's asset) fails, (acme, acme's asset) works.
    signer = UrlSigner((serve_home / "serve" / "secret").read_bytes().strip(), ttl_s=60)
    for tenant, status in (("globex", 403), (None, 403), ("acme", 200)):
        signed, _ = signer.sign(mine_id, "wav", tenant=tenant)
        assert httpx.get(f"{server.url}/v1/assets/{mine_id}?{signed}", timeout=60).status_code == status, tenant


@pytest.mark.slow  # musicops serve processes
def test_invisible_prompts_and_too_short_clips_are_refused_by_the_api(server, tenant_keys) -> None:
    with _as(server, tenant_keys.acme) as acme:
        for prompt in ("\u200b", "\u200b\u200d\u2060", "\ufeff \u200b"):
            refused = acme.post("/v1/generate", json={"prompt": prompt, "duration_s": 0.5})
            assert refused.status_code == 422 and "no visible characters" in refused.json()["error"]["message"]
        short = acme.post("/v1/generate", json={"prompt": "calm piano", "duration_s": 0.1})
        assert short.status_code == 422 and "0.5" in short.json()["error"]["message"]
        spec = httpx.get(f"{server.url}/openapi.json", timeout=60).json()["components"]["schemas"]["GenerateRequest"]
        duration = spec["properties"]["duration_s"]  # optional (a preset may give it): anyOf [number, null]
        assert [o["minimum"] for o in duration.get("anyOf", [duration]) if "minimum" in o] == [0.5]


def test_a_key_database_from_before_tenancy_migrates_in_place(database_url: str) -> None:
    """The tenant/admin columns are added on open; existing keys keep working, each a tenant of its own."""
    from sqlalchemy import create_engine, inspect, text

    store = KeyStore(database_url)
    old_key, plaintext = store.create("legacy", quota_minutes=5)
    store.close()
    engine = create_engine(database_url)
    with engine.begin() as conn:  # the schema as it was
        conn.execute(text("ALTER TABLE api_keys DROP COLUMN tenant"))
        conn.execute(text("ALTER TABLE api_keys DROP COLUMN admin"))
        conn.execute(text("DROP TABLE alembic_version_keys"))  # made before migrations
    assert {"tenant", "admin"}.isdisjoint(c["name"] for c in inspect(engine).get_columns("api_keys"))
    engine.dispose()
    first, second = KeyStore(database_url), KeyStore(database_url)  # two replicas opening at once
    try:
        key = first.verify(plaintext)
        assert key is not None and key.key_id == old_key.key_id and key.quota_minutes_per_day == 5
        assert (key.tenant, key.admin) == ("legacy", False)
        assert second.by_id(old_key.key_id) == key
        made = first.create("new-admin", tenant="legacy", admin=True)[0]
        assert (made.tenant, made.admin) == ("legacy", True)
        with pytest.raises(ValueError, match="tenant"):
            first.create("bad", tenant="no spaces allowed")
        with pytest.raises(ValueError, match="reserved"):
            first.create("anonymous")
    finally:
        first.close()
        second.close()


def test_keys_cli_takes_a_tenant_and_the_admin_scope(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from musicops.cli import app

    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "ops", "--tenant", "acme", "--admin"])
    assert created.exit_code == 0, created.output
    assert runner.invoke(app, ["keys", "create", "--name", "plain"]).exit_code == 0
    listed = runner.invoke(app, ["keys", "list"]).output
    row = next(line for line in listed.splitlines() if " ops " in line)
    assert "acme" in row and "yes" in row
    assert any(line.count("plain") == 2 for line in listed.splitlines())  # name and own tenant
