"""GET /v1/models, /v1/library, /healthz, /readyz, /metrics."""

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from musicops.serving.keys import ApiKey
from musicops.serving.routers.deps import api_key, service
from musicops.serving.schemas import Health, ServiceModels
from musicops.serving.service import ERROR_RESPONSES, Service

models = APIRouter(prefix="/v1", tags=["models"], responses=ERROR_RESPONSES)
ops = APIRouter(tags=["ops"])


@models.get("/models", response_model=ServiceModels, summary="The model version in service")
async def list_models(key: ApiKey = Depends(api_key), svc: Service = Depends(service)) -> Any:
    """The reference served, the version in service, the alias watched and any version loading."""
    return svc.manager.status()


@models.get("/library", summary="Prompt templates and presets a request may name")
async def library(key: ApiKey = Depends(api_key)) -> Any:
    """The templates (text, parameters with defaults and limits) and presets (duration, variations,
    tags) shipped with this server, each with its version and file sha256 as assets record them."""
    from dataclasses import asdict

    from musicops.generation.library import names, preset, template

    return {"templates": [asdict(template(name)) for name in names("template")],
            "presets": [asdict(preset(name)) for name in names("preset")]}


@ops.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Any:
    return {"status": "ok"}


@ops.get("/readyz", response_model=Health, summary="Readiness: a model is loaded and the asset store is writable",
         responses={503: {"model": Health, "description": "Still loading, or the asset store is not writable "
                                                          "(`detail` names the path and the problem)"}})
async def readyz(svc: Service = Depends(service)) -> Any:
    if not svc.manager.ready:
        return JSONResponse({"status": "loading", "model": None}, status_code=503)
    model = svc.manager.current.resolved.pinned_uri
    # Every request stores its clips: a store that cannot take a file must take the replica out of traffic.
    problem = await run_in_threadpool(svc.engine.store.write_problem)
    if problem is not None:
        return JSONResponse({"status": "store_unwritable", "model": model, "detail": problem}, status_code=503)
    return {"status": "ready", "model": model}


@ops.get("/metrics", summary="Prometheus metrics", response_class=Response,
         responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request, svc: Service = Depends(service)) -> Any:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
