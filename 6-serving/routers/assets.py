"""GET /v1/assets/{asset_id} (signed URL, or a key) and GET /v1/audit/{asset_id} (key).

Both answer 404 for an asset of another tenant, the same as for an id that does not exist.
"""

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from musicops.serving.keys import ApiKey
from musicops.serving.routers.deps import api_key, service
from musicops.serving.schemas import AuditOut, ErrorResponse
from musicops.serving.service import ERROR_RESPONSES, ApiError, Service

ASSET_ID = r"^a_[0-9a-f]{24}$"
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}

router = APIRouter(prefix="/v1", tags=["assets"])


def _presents_key(request: Request) -> bool:
    return bool(request.headers.get("x-api-key") or request.headers.get("authorization"))


@router.get("/assets/{asset_id}", summary="Download an asset through its signed URL (or with a key)",
            response_class=Response,
            responses={200: {"content": {"audio/wav": {}, "audio/flac": {}}, "description": "The audio file"},
                       307: {"description": "With an object store (S3): redirect to the file's presigned URL"},
                       401: {"model": ErrorResponse, "description": "Invalid API key (when one is sent instead of a signature)"},
                       403: {"model": ErrorResponse, "description": "Missing, invalid or expired signature"},
                       404: {"model": ErrorResponse, "description": "No such asset or format (or another tenant's)"},
                       422: {"model": ErrorResponse, "description": "Malformed URL"}})
async def get_asset(request: Request, asset_id: str = Path(pattern=ASSET_ID),
                    fmt: Literal["wav", "flac", "ogg"] = Query("wav"),
                    exp: int | None = Query(None, ge=0, le=2**40), sig: str | None = Query(None, max_length=128),
                    svc: Service = Depends(service)) -> Any:
    """With `exp` and `sig` (the signed URL): the expiry, then the HMAC over (tenant of the asset,
    asset id, format, expiry); an unknown asset fails the HMAC like a forged one (403). Without a
    signature, an API key may fetch the assets it may see (404 for any other). With an S3 asset store
    the answer is a 307 to the store's presigned URL, after exactly the same checks."""
    if exp is None and sig is None and _presents_key(request):
        key = await run_in_threadpool(svc.authenticate, request)
        record = await run_in_threadpool(svc.visible_asset, key, asset_id)
    else:
        problem = svc.signer.precheck(exp, sig)
        if problem is not None:
            raise ApiError(403, "bad_signature", problem, "signature")
        record = await run_in_threadpool(svc.engine.db.get_asset, asset_id)
        problem = svc.signer.verify(asset_id, fmt, exp, sig, tenant=record.tenant if record else None)
        if record is None or problem is not None:
            raise ApiError(403, "bad_signature", problem or "invalid signature", "signature")
    if fmt not in record.files or not record.passed:
        raise ApiError(404, "not_found", f"no deliverable {fmt} file for asset {asset_id}", "not_found")
    sha = record.files[fmt]["sha256"]
    # An object store delivers its own bytes: send the client to a presigned URL (checks above done).
    presigned = await run_in_threadpool(svc.presigned_url, record, fmt, sha)
    if presigned is not None:
        return RedirectResponse(presigned[0], status_code=307, headers={"Cache-Control": "no-store"})
    try:
        data = await run_in_threadpool(svc.engine.store.read, sha, fmt)
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"asset {asset_id} file is missing from the store", "not_found") from None
    return Response(data, media_type=MEDIA_TYPES[fmt],
                    headers={"ETag": f'"{sha}"', "Cache-Control": "private, max-age=300",
                             "Content-Disposition": f'inline; filename="{asset_id}.{fmt}"'})


@router.get("/audit/{asset_id}", response_model=AuditOut, summary="Provenance record and gate verdicts",
            responses={**ERROR_RESPONSES,
                       404: {"model": ErrorResponse, "description": "No such asset (or another tenant's)"}})
async def audit(request: Request, asset_id: str = Path(pattern=ASSET_ID), key: ApiKey = Depends(api_key),
                svc: Service = Depends(service)) -> Any:
    """Everything recorded about an asset of the key's tenant (prompt, seed, params, model version,
    code version, post-processing, loudness, checks), the gate verdicts (copyright, MOS) and fresh
    signed URLs bound to the tenant."""

    def load() -> tuple[Any, list[dict[str, Any]]]:
        record = svc.visible_asset(key, asset_id)
        return record, svc.engine.db.gates_for(asset_id)

    record, gates = await run_in_threadpool(load)
    urls, exp = svc.signed_urls(request, record)
    return {"asset": record.to_dict(), "gates": gates, "urls": urls, "expires_at": exp}
