"""`musicops serve`: the generation API (FastAPI + uvicorn) on the registry champion."""

from __future__ import annotations

import typer

from musicops.cli.common import fail


def _cannot_start(message: str) -> None:
    """One plain line on stderr (no wrapping, no markup: it names a path) and exit code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def serve(
    model: str = typer.Option("musicgen-tiny", help="models:/NAME@ALIAS (watched), models:/NAME/VERSION, "
                                                    "a model directory or musicgen-tiny."),
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback unless told otherwise)."),
    port: int = typer.Option(8000, help="Port."),
    poll_interval: float = typer.Option(30.0, help="Seconds between alias checks (0 = never)."),
    max_batch_size: int = typer.Option(8, help="Most clips per model call (dynamic batching)."),
    max_wait_ms: float = typer.Option(10.0, help="Longest wait for batch mates while requests are arriving."),
    job_concurrency: int = typer.Option(16, help="Jobs handed to the batcher at once."),
    finish_processes: int = typer.Option(1, help="Worker processes that post-process and store clips "
                                                 "(0 = a thread of the server)."),
    max_duration: float = typer.Option(None, help="Longest clip in seconds (default and most: the global limit, 60 s)."),
    max_variations: int = typer.Option(4, help="Most variations per request."),
    url_ttl: int = typer.Option(3600, help="Lifetime of signed audio URLs, seconds."),
    webhook_host: list[str] = typer.Option(None, help="Host (or host:port) webhooks may call; repeatable. "
                                                      "Default: none (webhooks refused)."),
    public_url: str = typer.Option(None, help="Base URL for audio links when behind a proxy."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without API keys (local experiments only)."),
    max_body_bytes: int = typer.Option(1 << 20, help="Largest request body read; larger ones get 413 "
                                                     "while they are read, before authentication."),
    log_level: str = typer.Option("info", help="debug, info, warning, error."),
    precision: str = typer.Option("fp32", help="Decoder precision: fp32, bf16 or int8 (non-fp32 audio gets its "
                                               "own cache entries; recorded in each asset's params)."),
) -> None:
    """Serve the generation API: sync, async jobs, streaming, signed assets, audit, metrics."""

    from musicops.config import get_settings
    from musicops.models.loading import resolve_model
    from musicops.models.sampling import MAX_DURATION_S
    from musicops.registry import ModelNotFoundError
    from musicops.serving.app import StartupError, run_server
    from musicops.serving.config import ServeConfig
    from musicops.store.assets import asset_store_problem

    settings = get_settings()
    hosts = tuple(webhook_host or ()) or settings.webhook_hosts
    try:
        config = ServeConfig(model=model, host=host, port=port, poll_interval_s=poll_interval,
                             max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, job_concurrency=job_concurrency,
                             finish_processes=finish_processes,
                             max_duration_s=max_duration if max_duration is not None else MAX_DURATION_S,
                             max_variations=max_variations, url_ttl_s=url_ttl, webhook_hosts=hosts,
                             require_keys=not no_auth, public_url=public_url, max_body_bytes=max_body_bytes,
                             precision=precision)
        # Every request writes to the asset store: a path that cannot take a file fails the start.
        problem = asset_store_problem(settings)
        if problem is not None:
            _cannot_start(problem)
        # Resolve the alias to a version now: an unknown model fails the start, not the first request.
        initial = resolve_model(model, settings)
    except (ModelNotFoundError, ValueError, OSError) as exc:
        fail(str(exc), 2)
    try:
        run_server(config, initial=initial, log_level=log_level, settings=settings)
    except StartupError as exc:
        _cannot_start(str(exc))
