"""POST /v1/jobs (202, durable) and GET /v1/jobs/{job_id} (keys of the job's tenant, or admin)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from musicops.serving.engine import batch_request_items, request_items
from musicops.serving.jobs import Job, host_allowed
from musicops.serving.keys import ApiKey
from musicops.serving.routers.deps import api_key, service
from musicops.serving.routers.generate import items_within_quota
from musicops.serving.schemas import ErrorResponse, JobOut
from musicops.serving.service import ERROR_RESPONSES, ApiError, Service

JOB_ID = r"^j_[0-9a-f]{32}$"


def render_job(svc: Service, request: Request, job: Job) -> dict[str, Any]:
    total = max(1, job.total)
    done = job.total if job.state == "succeeded" else job.done
    eta = None
    if job.state in ("queued", "running"):
        # audio seconds still to generate: queued jobs before this one, then this job's remaining clips
        # (what the model holds now is added by eta_s), at the loaded model's measured speed
        ahead = svc.jobs.audio_seconds_ahead(job) if job.state == "queued" else 0.0
        mine = job.reserved_seconds * (job.total - done) / total
        seconds = svc.engine.eta_s(ahead + mine)
        eta = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
    result = None
    if job.state == "succeeded" and job.result:
        records = [svc.engine.db.get_asset(a) for a in job.result["asset_ids"]]
        # results stored before per-asset tags were kept carry the request's tags for every asset
        tags = job.result.get("tags") or [job.request.get("tags") or []] * len(records)
        rows = [(r, hit, v, t) for r, hit, v, t in zip(records, job.result["cache_hits"], job.result["variations"],
                                                         tags, strict=True) if r is not None]
        result = svc.response(request, rows) if rows else None
    return {"job_id": job.job_id, "state": job.state,
            "progress": {"done": done, "total": job.total, "fraction": done / total},
            "created_at": job.created_at.isoformat(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "estimated_completion": eta, "result": result, "error": job.error,
            "webhook_state": job.webhook_state, "webhook_error": job.webhook_error,
            "status_url": f"{svc.base_url(request)}/v1/jobs/{job.job_id}"}


async def queue_job(svc: Service, request: Request, key: ApiKey, body: Any,
                    expand: Callable[[dict[str, Any]], list[Any]]) -> dict[str, Any]:
    """Check the webhook host, reserve the quota, commit the job (durable before the 202), wake the runner."""
    if body.webhook_url is not None and not host_allowed(body.webhook_url, svc.config.webhook_hosts):
        raise ApiError(422, "webhook_not_allowed", "webhook_url must be an http(s) URL on an allowed host "
                       "(server option --webhook-host); none are allowed by default", "validation")
    items, seconds = await items_within_quota(svc, key, body, expand)
    try:
        job = await run_in_threadpool(svc.jobs.add, key.key_id, key.user,
                                      body.model_dump(exclude={"webhook_url"}), len(items), seconds,
                                      body.webhook_url)
    except BaseException:
        await run_in_threadpool(svc.keys.refund, key, seconds)
        raise
    svc.metrics.jobs.labels("queued").inc()
    svc.runner.wake()
    return render_job(svc, request, job)


def build_router(JobRequest: Any, BatchJobRequest: Any) -> APIRouter:  # noqa: N803 - model classes, built per server config
    router = APIRouter(prefix="/v1", tags=["jobs"], responses=ERROR_RESPONSES)

    @router.post("/jobs/batch", status_code=202, response_model=JobOut, summary="Queue many lines as one job")
    async def create_batch_job(body: BatchJobRequest, request: Request, key: ApiKey = Depends(api_key),
                               svc: Service = Depends(service)) -> Any:
        """Bulk generation: up to 100 lines (each a prompt or template, duration, seed, variations,
        tags, preset) as one durable job with one quota reservation and one status URL; every clip is
        made once, and the result lists them in line order."""
        return await queue_job(svc, request, key, body, batch_request_items)

    @router.post("/jobs", status_code=202, response_model=JobOut, summary="Queue a generation job")
    async def create_job(body: JobRequest, request: Request, key: ApiKey = Depends(api_key),
                         svc: Service = Depends(service)) -> Any:
        """The job is committed to the job database before this returns: it survives a crash and
        runs exactly once. Poll `status_url`, or pass `webhook_url` (allow-listed hosts only)."""
        return await queue_job(svc, request, key, body, request_items)

    @router.get("/jobs/{job_id}", response_model=JobOut, summary="Job state, progress, ETA and result",
                responses={404: {"model": ErrorResponse, "description": "No such job (or another tenant's)"}})
    async def get_job(request: Request, job_id: str = Path(pattern=JOB_ID), key: ApiKey = Depends(api_key),
                      svc: Service = Depends(service)) -> Any:
        """A job is visible to the keys of the tenant it was submitted for (and admin keys); any other
        key gets the same 404 as for an id that does not exist."""
        job = await run_in_threadpool(svc.jobs.get, job_id)
        if job is None or not await run_in_threadpool(svc.can_see_job, key, job):
            raise ApiError(404, "not_found", f"no job {job_id}", "not_found")
        return await run_in_threadpool(render_job, svc, request, job)

    return router
