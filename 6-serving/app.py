"""The FastAPI application: `create_app(config)` builds it, `run_server(config)` serves it.

One process holds one model: the model thread batches requests (see `engine`), so scale out with
replicas (docs/deploy.md: deploy/kustomize), not uvicorn workers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from musicops import __version__
from musicops.config import Settings, get_settings
from musicops.errors import MusicopsError
from musicops.generation.planning import SamplingOptions
from musicops.models.loading import ResolvedModel
from musicops.serving.config import ServeConfig
from musicops.serving.context import RequestContextMiddleware, configure_logging
from musicops.serving.engine import Engine, batch_request_items, request_items
from musicops.serving.jobs import Job, JobRunner, JobStore
from musicops.serving.keys import KeyStore
from musicops.serving.metrics import ServerMetrics
from musicops.serving.model_manager import ModelManager
from musicops.serving.schemas import request_models
from musicops.serving.service import ApiError, Service, error_response
from musicops.serving.signing import UrlSigner, serve_secret

log = logging.getLogger(__name__)


class StartupError(MusicopsError, RuntimeError):
    """The server cannot start for a reason the operator must fix (the message names it)."""


class BodyLimitMiddleware:
    """Pure ASGI: a request body over `max_bytes` is refused with 413 while it is read, before any
    route, body parsing or authentication runs, so no request can make the server buffer more.

    A declared Content-Length over the limit is refused unread; a chunked body is counted as it
    streams and refused the moment it passes the limit (the app then sees a client disconnect and
    its own answer is dropped). The 413 closes the connection: the rest of the body is never read.
    """

    def __init__(self, app: Any, max_bytes: int, metrics: ServerMetrics | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, send)
            return
        received = 0
        state = {"started": False, "refused": False, "answered": False}

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    state["refused"] = True
                    if not state["started"]:
                        state["answered"] = True
                        await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            if state["answered"]:
                return  # the 413 went out in place of the app's answer
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, tracked_send)

    async def _refuse(self, scope: dict[str, Any], send: Any) -> None:
        from fastapi.responses import JSONResponse

        if self.metrics is not None:
            self.metrics.error("body_too_large")
        request_id = scope.get("state", {}).get("request_id")
        response = JSONResponse(
            {"error": {"code": "body_too_large", "request_id": request_id,
                       "message": f"request body is larger than this server's limit of {self.max_bytes} bytes"}},
            status_code=413, headers={"connection": "close"})

        async def no_body() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


def build_service(config: ServeConfig, settings: Settings | None = None,
                  initial: ResolvedModel | None = None) -> Service:
    settings = (settings or get_settings(config.home)).ensure()
    serve_dir = settings.home / "serve"
    metrics = ServerMetrics(settings.price_per_accelerator_hour)
    manager = ModelManager(config.model, settings, config.poll_interval_s, metrics, initial, config.precision)
    engine = Engine(manager, settings, config.max_batch_size, config.max_wait_ms, metrics, config.formats,
                    config.finish_processes, config.max_duration_s, config.precision)
    keys = KeyStore.for_settings(settings)
    jobs = JobStore.for_settings(settings, config.port)
    signer = UrlSigner(serve_secret(serve_dir, settings), config.url_ttl_s)

    def plan_job(job: Job) -> Any:
        request = job.request
        items = batch_request_items(request) if "items" in request else request_items(request)
        owner = keys.by_id(job.key_id)  # the job's tenant is its key's (None: a --no-auth job)
        options = engine.options(SamplingOptions(**request["sampling"]), job.user).for_tenant(
            owner.tenant if owner is not None else None)
        return engine.plan(items, options, f"api:/v1/jobs/{job.job_id}", batch_id=job.job_id)

    def render_result(job: Job, outcomes: list[Any]) -> dict[str, Any]:
        first = outcomes[0].record
        return {"asset_ids": [o.record.asset_id for o in outcomes], "cache_hits": [o.cache_hit for o in outcomes],
                "variations": [o.item.variation for o in outcomes], "tags": [list(o.item.tags) for o in outcomes],
                "model": {"name": first.model_name, "version": first.model_version, "uri": first.model_uri}}

    def refund(job: Job) -> None:
        key = next((k for k in keys.all() if k.key_id == job.key_id), None)
        if key is not None:
            keys.refund(key, job.reserved_seconds, job.created_at.date().isoformat())

    runner = JobRunner(jobs, engine, plan_job, render_result, signer, config.job_concurrency, metrics, refund)
    metrics.track_queue("model", engine.queue_depth)
    metrics.track_queue("jobs", runner.queued)
    return Service(config, settings, metrics, manager, engine, keys, keys.rate_limiter(), signer, jobs, runner)


def create_app(config: ServeConfig | None = None, settings: Settings | None = None,
               initial: ResolvedModel | None = None) -> FastAPI:
    config = config or ServeConfig()
    svc = build_service(config, settings, initial)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.manager.start()
        svc.engine.start()
        svc.runner.start()
        log.info("serving %s on http://%s:%d (auth %s)", config.model, config.host, config.port,
                 "on" if config.require_keys else "OFF")
        try:
            yield
        finally:
            svc.runner.stop()
            svc.manager.stop()
            svc.engine.stop()
            svc.jobs.close()
            svc.keys.close()

    app = FastAPI(title="musicops generation API", version=__version__, lifespan=lifespan,
                  description="Text-to-music generation on the registry champion: sync, async jobs, "
                              "streaming, signed asset URLs, provenance audit. Send an API key as "
                              "`Authorization: Bearer <key>` (created with `musicops keys create`).")
    app.state.svc = svc
    generate_request, stream_request, job_request, batch_request = request_models(config)

    from musicops.serving.routers import assets, generate, jobs, ops, stream

    app.include_router(generate.build_router(generate_request, stream_request))
    app.include_router(stream.router)
    app.include_router(jobs.build_router(job_request, batch_request))
    app.include_router(assets.router)
    app.include_router(ops.models)
    app.include_router(ops.ops)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        svc.metrics.error(exc.cause)
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        svc.metrics.error("validation")
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return error_response(request, 422, "invalid_request", "; ".join(problems)[:2000])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 404:
            svc.metrics.error("not_found")
        return error_response(request, exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Any:
        svc.metrics.error("internal")
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return error_response(request, 500, "internal_error", "internal error; see the server log for this request id")

    # Added first, so it runs inside the request-id middleware (413s are logged with their id).
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, metrics=svc.metrics)
    app.add_middleware(RequestContextMiddleware, metrics=svc.metrics)
    return app


def run_server(config: ServeConfig, initial: ResolvedModel | None = None, log_level: str = "info",
               settings: Settings | None = None) -> None:
    import uvicorn

    from musicops.models.threads import apply_torch_threads

    configure_logging(log_level)
    settings = settings or get_settings(config.home)
    apply_torch_threads(settings)
    try:
        app = create_app(config, settings=settings, initial=initial)
    except OSError as exc:  # state directory, store or database path unusable
        where = f" ({exc.filename})" if exc.filename else ""
        raise StartupError(f"cannot start the server: {exc.strerror or exc}{where}") from exc
    uvicorn.run(app, host=config.host, port=config.port, log_config=None, access_log=False,
                log_level=log_level, timeout_graceful_shutdown=10)
