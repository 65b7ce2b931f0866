"""POST /v1/generate (sync) and POST /v1/generate/stream (chunked WAV, sent as it is decoded)."""

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from musicops.generation.planning import SamplingOptions
from musicops.serving.engine import GenerationError, request_items
from musicops.serving.keys import ApiKey
from musicops.serving.routers.deps import api_key, service
from musicops.serving.schemas import GenerateResponse
from musicops.serving.service import ERROR_RESPONSES, ApiError, Service
from musicops.serving.streaming import stream_clip, stream_plan
from musicops.store.cache import asset_id_for

STREAM_CHUNK = 64 * 1024


async def items_within_quota(svc: Service, key: ApiKey, body: Any,
                             expand: Callable[[dict[str, Any]], list[Any]] = request_items) -> tuple[list[Any], float]:
    """The request's items (checked like prompts-file lines) with their minutes reserved on the key."""
    try:
        items = expand(body.model_dump())
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc), "validation") from None
    seconds = sum(item.duration_s for item in items)
    await run_in_threadpool(svc.reserve, key, seconds)
    return items, seconds


async def generate_outcomes(svc: Service, key: ApiKey, body: Any, source: str) -> list[Any]:
    """Validate, reserve quota, plan against the key's tenant's cache, batch through the model;
    outcomes in item order."""
    svc.require_ready()
    items, seconds = await items_within_quota(svc, key, body)
    try:
        options = svc.engine.options(SamplingOptions(**body.sampling.model_dump()), key.user).for_tenant(key.tenant)
        with svc.engine.arriving():
            future = await run_in_threadpool(lambda: svc.engine.submit(svc.engine.plan(items, options, source)))
        return await asyncio.wrap_future(future)
    except GenerationError as exc:
        await run_in_threadpool(svc.keys.refund, key, seconds)
        raise ApiError(500, "generation_failed", f"{exc}; nothing was charged", "generation") from None
    except BaseException:
        await run_in_threadpool(svc.keys.refund, key, seconds)
        raise


def build_router(GenerateRequest: Any, StreamRequest: Any) -> APIRouter:  # noqa: N803 - model classes, built per server config
    router = APIRouter(prefix="/v1", tags=["generate"], responses=ERROR_RESPONSES)

    @router.post("/generate", response_model=GenerateResponse, summary="Generate audio and wait for it")
    async def generate(body: GenerateRequest, request: Request, key: ApiKey = Depends(api_key),
                       svc: Service = Depends(service)) -> Any:
        """Cache first (the batch pipeline's keys, per tenant), then the model via the dynamic batcher.
        Returns the assets with signed, expiring audio URLs; assets that fail their quality checks
        are listed with `passed: false` and no URL. `cache_hit` is true only for the tenant's own
        earlier requests (each tenant has its own cache); `tags` are this request's."""
        outcomes = await generate_outcomes(svc, key, body, "api:/v1/generate")
        return svc.response(request, [(o.record, o.cache_hit, o.item.variation, o.item.tags) for o in outcomes])

    @router.post("/generate/stream", summary="Generate one clip and stream it as WAV while it is made",
                 response_class=StreamingResponse,
                 responses={200: {"content": {"audio/wav": {}}, "description": "WAV bytes, chunked"},
                            })
    async def generate_stream(body: StreamRequest, request: Request, key: ApiKey = Depends(api_key),
                              svc: Service = Depends(service)) -> Any:
        """True streaming: a WAV header (exact: the length follows from duration_s), then PCM16 chunks
        as the model decodes them (EnCodec in cross-faded windows, streaming leveller + true-peak
        limiter), with chunked transfer encoding. The finished stream is stored as exactly the bytes
        sent, under its own cache key (params `delivery: stream`); the same request again streams the
        stored bytes (`X-Cache: hit`). Quality checks run on the stored stream after delivery and are
        recorded (provenance `checks`, `passed`); streaming cannot withhold audio it already sent."""
        svc.require_ready()
        items, seconds = await items_within_quota(svc, key, body)
        try:
            options = svc.engine.options(SamplingOptions(**body.sampling.model_dump()), key.user).for_tenant(key.tenant)
            plan, params = await run_in_threadpool(stream_plan, svc.engine, items[0], options, "api:/v1/generate/stream")
        except BaseException:
            await run_in_threadpool(svc.keys.refund, key, seconds)
            raise
        record = plan.cached.get(plan.keys[0])
        headers = {"X-Asset-Id": asset_id_for(plan.keys[0]), "X-Model-Version": str(plan.model.version or ""),
                   "X-Cache": "hit" if record is not None else "miss"}
        if record is not None:
            await run_in_threadpool(svc.keys.refund, key, seconds)  # a hit generates nothing
            # A stream is checked after it was delivered (its checks are recorded, flags included): the
            # stored bytes are what this request already received once, so a hit streams them again.
            sha, store = record.files["wav"]["sha256"], svc.engine.store

            def stored() -> Iterator[bytes]:
                with store.local_file(sha, "wav") as path, path.open("rb") as handle:  # S3: a temporary copy
                    while block := handle.read(STREAM_CHUNK):
                        yield block

            return StreamingResponse(stored(), media_type="audio/wav", headers=headers)
        refund = functools.partial(svc.keys.refund, key, seconds)
        return StreamingResponse(stream_clip(svc, plan, params, refund), media_type="audio/wav", headers=headers)

    return router
