"""GET /v1/assets/{asset_id} (signed URL, no key) and GET /v1/audit/{asset_id} (key)."""

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from musicops.serving.keys import ApiKey
from musicops.serving.routers.deps import api_key, service
from musicops.serving.schemas import AuditOut, ErrorResponse
from musicops.serving.service import ERROR_RESPONSES, ApiError, Service

ASSET_ID = r"^a_[0-9a-f]{24}$"
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}

router = APIRouter(prefix="/v1", tags=["assets"])


@router.get("/assets/{asset_id}", summary="Download an asset through its signed URL",
            response_class=Response,
            responses={200: {"content": {"audio/wav": {}, "audio/flac": {}}, "description": "The audio file"},
                       403: {"model": ErrorResponse, "description": "Missing, invalid or expired signature"},
                       404: {"model": ErrorResponse, "description": "No such asset or format"},
                       422: {"model": ErrorResponse, "description": "Malformed URL"}})
async def get_asset(asset_id: str = Path(pattern=ASSET_ID), fmt: Literal["wav", "flac", "ogg"] = Query("wav"),
                    exp: int | None = Query(None, ge=0, le=2**40), sig: str | None = Query(None, max_length=128),
                    svc: Service = Depends(service)) -> Any:
    """Checked before anything is read: the HMAC over (asset id, format, expiry) and the expiry."""
    problem = svc.signer.verify(asset_id, fmt, exp, sig)
    if problem is not None:
        raise ApiError(403, "bad_signature", problem, "signature")
    record = await run_in_threadpool(svc.engine.db.get_asset, asset_id)
    if record is None or fmt not in record.files or not record.passed:
        raise ApiError(404, "not_found", f"no deliverable {fmt} file for asset {asset_id}", "not_found")
    sha = record.files[fmt]["sha256"]
    try:
        data = await run_in_threadpool(svc.engine.store.read, sha, fmt)
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"asset {asset_id} file is missing from the store", "not_found") from None
    return Response(data, media_type=MEDIA_TYPES[fmt],
                    headers={"ETag": f'"{sha}"', "Cache-Control": "private, max-age=300",
                             "Content-Disposition": f'inline; filename="{asset_id}.{fmt}"'})


@router.get("/audit/{asset_id}", response_model=AuditOut, summary="Provenance record and gate verdicts",
            responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "No such asset"}})
async def audit(request: Request, asset_id: str = Path(pattern=ASSET_ID), key: ApiKey = Depends(api_key),
                svc: Service = Depends(service)) -> Any:
    """Everything recorded about an asset (prompt, seed, params, model version, code version,
    post-processing, loudness, checks), the gate verdicts (copyright, MOS) and fresh signed URLs."""

    def load() -> tuple[Any, list[dict[str, Any]]]:
        record = svc.engine.db.get_asset(asset_id)
        return record, (svc.engine.db.gates_for(asset_id) if record is not None else [])

    record, gates = await run_in_threadpool(load)
    if record is None:
        raise ApiError(404, "not_found", f"no asset {asset_id}", "not_found")
    urls, exp = svc.signed_urls(request, record)
    return {"asset": record.to_dict(), "gates": gates, "urls": urls, "expires_at": exp}
