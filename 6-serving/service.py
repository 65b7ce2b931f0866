"""Everything one server holds (config, model manager, engine, keys, jobs, signer, metrics) and the
helpers the routers share: errors, authentication, limits, tenancy, rendering outcomes as responses.

Tenancy (see `musicops.serving.keys`): a key sees the assets, audit records and jobs of its own
tenant; an admin key sees all. Anything else is answered 404 exactly like an id that does not
exist, so a key learns nothing about other tenants' assets or jobs. Each tenant has its own cache
(`musicops.store.cache`), so `cache_hit` only ever reflects the tenant's own earlier requests.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from musicops.config import Settings
from musicops.serving.config import ServeConfig
from musicops.serving.engine import Engine
from musicops.serving.jobs import JobRunner, JobStore
from musicops.serving.keys import (
    ANONYMOUS,
    ApiKey,
    KeyStore,
    RateLimiter,
    SharedRateLimiter,
    seconds_to_next_day,
)
from musicops.serving.metrics import ServerMetrics
from musicops.serving.model_manager import ModelManager
from musicops.serving.schemas import ErrorResponse
from musicops.serving.signing import UrlSigner

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid API key"},
    422: {"model": ErrorResponse, "description": "Invalid request (limits of the prompts-file format)"},
    429: {"model": ErrorResponse, "description": "Rate limit or daily quota exceeded (Retry-After says when)"},
    500: {"model": ErrorResponse, "description": "Generation failed (the request id is in the server log)"},
    503: {"model": ErrorResponse, "description": "The model is still loading"},
}


class ApiError(Exception):
    """An expected failure with a status, a machine-readable code and a message safe to show."""

    def __init__(self, status: int, code: str, message: str, cause: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.cause = cause or code
        self.headers = headers or {}


def error_response(request: Request, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id")
    return JSONResponse({"error": {"code": code, "message": message, "request_id": request_id}},
                        status_code=status, headers=headers)

# SigV4 presigned URLs live at most seven days; a longer url_ttl_s is cut to that for them.
PRESIGN_MAX_TTL_S = 7 * 24 * 3600


@dataclass
class Service:
    config: ServeConfig
    settings: Settings
    metrics: ServerMetrics
    manager: ModelManager
    engine: Engine
    keys: KeyStore
    limiter: RateLimiter | SharedRateLimiter
    signer: UrlSigner
    jobs: JobStore
    runner: JobRunner

    def require_ready(self) -> None:
        if not self.manager.ready:
            raise ApiError(503, "not_ready", "the model is still loading; retry shortly", "not_ready",
                           {"Retry-After": "2"})

    # auth and limits

    def authenticate(self, request: Request) -> ApiKey:
        if not self.config.require_keys:
            return ANONYMOUS
        presented = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if not presented and authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        if not presented:
            raise ApiError(401, "missing_api_key", "send an API key: 'Authorization: Bearer <key>' or 'X-API-Key'",
                           "unauthenticated", {"WWW-Authenticate": "Bearer"})
        key = self.keys.verify(presented)
        if key is None:
            raise ApiError(401, "invalid_api_key", "the API key is invalid or revoked", "unauthenticated",
                           {"WWW-Authenticate": "Bearer"})
        request.scope.setdefault("state", {})["key_name"] = key.name
        wait = self.limiter.acquire(key)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"rate limit of {key.rate_per_min:g} requests/min exceeded",
                           "rate_limited", {"Retry-After": str(max(1, math.ceil(wait)))})
        return key

    def reserve(self, key: ApiKey, seconds: float) -> None:
        granted, used = self.keys.reserve(key, seconds)
        if not granted:
            limit = (key.quota_minutes_per_day or 0) * 60
            raise ApiError(429, "quota_exceeded",
                           f"daily quota of {key.quota_minutes_per_day:g} generated minutes exceeded "
                           f"({used:.1f}s used of {limit:.0f}s; this request needs {seconds:.1f}s); "
                           "resets at 00:00 UTC", "quota_exceeded",
                           {"Retry-After": str(seconds_to_next_day())})

    def base_url(self, request: Request) -> str:
        return (self.config.public_url or str(request.base_url)).rstrip("/")

    # tenancy

    @staticmethod
    def can_see(key: ApiKey, record: Any) -> bool:
        """Whether `key` may see this asset: its tenant's, or any for an admin. Assets stored through
        the API before tenancy have no tenant; the key that made them (`user` = key:NAME) still sees them."""
        if key.admin:
            return True
        if record.tenant is not None:
            return record.tenant == key.tenant
        return record.user == key.user

    def visible_asset(self, key: ApiKey, asset_id: str) -> Any:
        """The asset's record, or ApiError 404 when it does not exist or is not this key's to see."""
        record = self.engine.db.get_asset(asset_id)
        if record is None or not self.can_see(key, record):
            raise ApiError(404, "not_found", f"no asset {asset_id}", "not_found")
        return record

    def job_tenant(self, job: Any) -> str | None:
        """The tenant a job was submitted for (its key's); None for --no-auth jobs."""
        owner = self.keys.by_id(job.key_id)
        return owner.tenant if owner is not None else None

    def can_see_job(self, key: ApiKey, job: Any) -> bool:
        if key.admin or job.key_id == key.key_id:
            return True
        tenant = self.job_tenant(job)
        return tenant is not None and tenant == key.tenant

    # rendering

    def signed_urls(self, request: Request, record: Any) -> tuple[dict[str, str], int | None]:
        """Signed URLs bound to the asset's tenant (`UrlSigner`); only call for a record the key may see.

        With an object store (S3) they are the store's presigned GET URLs instead, valid for the same
        `url_ttl_s`: clients download straight from the bucket and the API serves no bytes."""
        if not record.passed:
            return {}, None
        urls, exp = {}, None
        base = self.base_url(request)
        for fmt, file in record.files.items():
            presigned = self.presigned_url(record, fmt, file["sha256"])
            if presigned is not None:
                urls[fmt], exp = presigned
                continue
            query, exp = self.signer.sign(record.asset_id, fmt, tenant=record.tenant)
            urls[fmt] = f"{base}/v1/assets/{record.asset_id}?{query}"
        return urls, exp

    def presigned_url(self, record: Any, fmt: str, sha256: str) -> tuple[str, int] | None:
        """(URL, expiry) of the store's presigned GET for one file of an asset the caller may see;
        None for a store that serves no URLs of its own (a local directory)."""
        ttl = min(self.config.url_ttl_s, PRESIGN_MAX_TTL_S)
        exp = int(time.time()) + ttl
        url = self.engine.store.presigned_url(sha256, fmt, ttl, filename=f"{record.asset_id}.{fmt}")
        return None if url is None else (url, exp)

    def asset_out(self, request: Request, record: Any, cache_hit: bool, variation: int,
                  tags: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """One asset of a response; `tags` are this request's (they are not part of the cache key, so a
        cached asset's record may carry another request's)."""
        urls, exp = self.signed_urls(request, record)
        return {"asset_id": record.asset_id, "sha256": record.sha256, "seed": record.seed, "variation": variation,
                "duration_s": record.duration_s, "sample_rate": record.sample_rate, "passed": record.passed,
                "failed_checks": [c["name"] for c in record.checks if not c.get("passed", True)],
                "cache_hit": cache_hit, "loudness_lufs": record.loudness_after,
                "true_peak_dbtp": record.true_peak_after, "audio_url": urls.get("wav") or next(iter(urls.values()), None),
                "urls": urls, "expires_at": exp, "tags": list(tags)}

    def response(self, request: Request, rows: list[tuple[Any, bool, int, list[str] | tuple[str, ...]]]) -> dict[str, Any]:
        """GenerateResponse from (record, cache_hit, variation, tags) rows: each asset with its own line's
        tags (a request's, or its preset's), never those of whoever stored the asset first."""
        first = rows[0][0]
        return {"request_id": request.scope.get("state", {}).get("request_id"),
                "model": {"name": first.model_name, "version": first.model_version, "uri": first.model_uri},
                "assets": [self.asset_out(request, r, hit, v, tags) for r, hit, v, tags in rows]}
