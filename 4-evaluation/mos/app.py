"""The MOS rating web app: server-rendered pages over `MosService` (FastAPI + Jinja2, autoescaped).

Rater flow: ``GET /r/{token}`` (consent + instructions) -> ``POST /r/{token}/consent`` ->
``GET /r/{token}/rate`` (next unrated clip) -> ``POST /r/{token}/rate`` -> 303 to the next clip or to
``/r/{token}/done``. All state is server-side (the service's tables), so a rater who closes the
browser resumes at the first unrated clip with the same link.

Blind test: audio is served as ``/r/{token}/audio/{item_id}`` (item ids are random per rater and
item), never by asset id, hash or model version, and only for items in that rater's assignment.

Security:
- CSRF tokens (`security.CsrfSigner`) are HMAC-bound to the rater and the form; the key comes from
  ``MUSICOPS_MOS_SECRET`` or ``HOME/mos-secret`` (0600), so several worker processes agree on it.
- The rating form stays disabled until the clip's ``ended`` event (a small nonce'd inline script),
  which also sets ``played=1``; the server refuses a rating without it (400). ``played=1`` is only
  the page's word, so the server also keeps its own: every byte range of the clip it sends to the
  rater (``Range`` requests answered with 206, as ``<audio>`` makes them) is recorded once it has
  been handed to the connection, and a rating is refused (400) until those ranges cover the whole
  file. A client that fetches the file without playing it cannot be told apart; one that never
  fetched it, or fetched only part, is refused.
- Every response carries ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer`` (the invite token is in the URL) and a CSP that allows only the
  nonce'd inline script/style, same-origin media and data: images.
- Invite tokens and ``admin=`` values are scrubbed from uvicorn's log records
  (`security.RedactTokensFilter`); the app itself logs rater ids, never tokens.
- Results (``/campaigns/{id}/results``) need ``MUSICOPS_MOS_ADMIN_TOKEN`` (as ``?admin=``,
  ``X-Admin-Token`` or ``Authorization: Bearer``) when it is set; when it is unset, only loopback
  clients (127.0.0.1 / ::1) may see them. Behind a reverse proxy on the same host every client looks
  like loopback: set the admin token there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from musicops.evaluation.mos import security
from musicops.evaluation.mos.errors import Conflict, Forbidden, NotFound, NotListened
from musicops.evaluation.mos.models import ACR_LABELS, Campaign, Rater
from musicops.evaluation.mos.service import MosService

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
_MAX_BODY = 16 * 1024  # rating and consent forms are a few hundred bytes


class PageError(Exception):
    """An error rendered as an HTML page with `status`."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status, self.title, self.message = status, title, message


class SecurityHeaders:
    """Pure ASGI middleware: a CSP nonce per request (``request.state.csp_nonce``) and security headers
    on every response; refuses oversized request bodies (413) before they are read."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > _MAX_BODY):
                response = HTMLResponse("<h1>Request too large</h1>", status_code=413)
                await response(scope, receive, self._wrap(send, ""))
                return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        await self.app(scope, receive, self._wrap(send, nonce))

    @staticmethod
    def _wrap(send: Any, nonce: str) -> Any:
        csp = ("default-src 'none'; "
               f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
               "img-src 'self' data:; media-src 'self'; form-action 'self'; base-uri 'none'; "
               "frame-ancestors 'none'")
        extra = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
            (b"cache-control", b"no-store"),
        ]

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                replaced = {name for name, _ in extra}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in replaced]
                message = {**message, "headers": headers + extra}
            await send(message)

        return wrapped


class RangeNotSatisfiable(Exception):
    """A Range header that selects no byte of the file (416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The [start, end) a ``Range: bytes=...`` header asks for, or None to send the whole file (no
    header, another unit, several ranges or a malformed one: RFC 9110 lets a server ignore Range)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) \
            or (last and not last.isdigit()):
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None  # last before first: syntactically invalid, so ignored
    end = size if not last else min(size, int(last) + 1)
    if start >= size:
        raise RangeNotSatisfiable
    return start, end


class ServedAudio(Response):
    """Audio bytes that call `on_sent` once they have been handed to the connection, before the
    response is complete, so the next request on the same connection (the rating) sees the record."""

    media_type = "audio/wav"

    def __init__(self, content: bytes, status_code: int, headers: dict[str, str],
                 on_sent: Any = None) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self.on_sent = on_sent

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        if self.on_sent is not None:
            await anyio.to_thread.run_sync(self.on_sent)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _templates() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,  # every page: prompts, campaign names and instructions are untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and math.isfinite(value) else "n/a"


def _ci(low: float, high: float) -> str:
    return f"{_fmt(low)} – {_fmt(high)}" if math.isfinite(low) and math.isfinite(high) else "n/a"


def _plot_png(model_scores: list[Any], scale: tuple[float, float], title: str) -> str | None:
    """MOS with CI error bars per model version as base64 PNG (the shared plot; thread-safe)."""
    if not model_scores:
        return None
    from musicops.reports.plots import MosPoint, b64, mos_errorbar_png

    points = [MosPoint(m.model_version, m.mos, m.ci_low, m.ci_high) for m in model_scores]
    return b64(mos_errorbar_png(points, title=title, scale=scale))


def create_app(settings: Any = None, service: MosService | None = None) -> FastAPI:
    """The rating app for `service` (default: `MosService.from_settings(settings)`)."""
    from musicops.config import get_settings
    from musicops.store.assets import open_asset_store

    settings = settings or get_settings()
    service = service or MosService.from_settings(settings)
    store = open_asset_store(settings)
    signer = security.CsrfSigner(security.load_secret(Path(settings.home), settings))
    admin_token = security.admin_token(settings)
    env = _templates()
    security.install_log_redaction()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Handlers are sync (the service is); run at most as many at once as the service's connection
        # pool holds. More threads only queue on the GIL and SQLite's single writer, and each one
        # beyond the pool opens and closes a fresh overflow connection per query (measured: a third
        # of the server's CPU under 50 concurrent raters with anyio's default of 40 threads).
        pool_size = getattr(service.engine.pool, "size", lambda: 0)()
        if pool_size:
            anyio.to_thread.current_default_thread_limiter().total_tokens = max(2, pool_size)
        yield

    app = FastAPI(title="musicops MOS", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    app.state.service = service
    app.state.settings = settings

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(nonce=request.state.csp_nonce, **context)
        return HTMLResponse(html, status_code=status)

    def page_error(request: Request, exc: PageError) -> HTMLResponse:
        return render(request, "error.html", exc.status, title=exc.title, message=exc.message)

    app.add_exception_handler(PageError, page_error)  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        response = render(request, "error.html", exc.status_code, title=title,
                          message="There is nothing at this address.")
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    # ------------------------------------------------------------------ helpers over the service

    def rater_or_404(token: str) -> Rater:
        rater = service.rater_for_token(token)
        if rater is None:
            raise PageError(404, "Invitation not found",
                            "This invitation link is not valid. Please check that you copied the whole link.")
        return rater

    def consented_rater(token: str) -> Rater:
        rater = rater_or_404(token)
        if rater.consented_at is None:
            raise PageError(403, "Consent needed", "Please open your invitation link and give consent first.")
        return rater

    @functools.lru_cache(maxsize=256)
    def campaign_info(campaign_id: str) -> Campaign:
        """Rater pages show only fields fixed at creation (name, method, scale, instructions): cache them."""
        return service.campaign(campaign_id)

    def scale_context(campaign: Campaign) -> dict[str, Any]:
        low, high = campaign.scale
        return {"method": campaign.method, "scale_min": f"{low:g}", "scale_max": f"{high:g}"}

    # ------------------------------------------------------------------ routes

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/r/{token}", response_class=HTMLResponse)
    def landing(request: Request, token: str) -> Response:
        rater = rater_or_404(token)
        if rater.consented_at is not None:
            return RedirectResponse(f"/r/{token}/rate", status_code=303)
        campaign = campaign_info(rater.campaign_id)
        progress = service.progress(rater.rater_id)
        return render(request, "consent.html", campaign=campaign, token=token, total=progress.total,
                      csrf=signer.issue(rater.rater_id, "consent"), **scale_context(campaign))

    @app.post("/r/{token}/consent")
    def consent(token: str, csrf: str | None = Form(None), agree: str | None = Form(None)) -> Response:
        rater = rater_or_404(token)
        if not signer.verify(csrf, rater.rater_id, "consent"):
            raise PageError(403, "Form expired", "This form has expired. Please reload your invitation link.")
        if agree != "1":
            raise PageError(400, "Consent needed", "Please tick the consent box to take part.")
        service.record_consent(rater.rater_id)
        log.info("rater %s consented", rater.rater_id)
        return RedirectResponse(f"/r/{token}/rate", status_code=303)

    @app.get("/r/{token}/rate", response_class=HTMLResponse)
    def rate_page(request: Request, token: str) -> Response:
        rater = rater_or_404(token)
        if rater.consented_at is None:
            return RedirectResponse(f"/r/{token}", status_code=303)
        item = service.next_item(rater.rater_id)
        if item is None:
            return RedirectResponse(f"/r/{token}/done", status_code=303)
        campaign = campaign_info(rater.campaign_id)
        progress = service.progress(rater.rater_id)
        trap = item.kind == "trap"
        return render(
            request, "rate.html", campaign=campaign, token=token, item_id=item.item_id,
            position=min(progress.done + 1, progress.total), done=progress.done, total=progress.total,
            prompt="" if trap else item.prompt, attention=item.prompt if trap else "",
            has_reference=bool(item.reference_sha256), submission_id=secrets.token_urlsafe(16),
            csrf=signer.issue(rater.rater_id, "rate"), acr_labels=sorted(ACR_LABELS.items()),
            **scale_context(campaign),
        )

    @app.post("/r/{token}/rate")
    def rate_submit(token: str, item_id: str | None = Form(None), score: str | None = Form(None),
                    submission_id: str | None = Form(None), csrf: str | None = Form(None),
                    played: str | None = Form(None)) -> Response:
        rater = rater_or_404(token)
        if not signer.verify(csrf, rater.rater_id, "rate"):
            raise PageError(403, "Form expired", "This form has expired or is not yours. Please reload the page.")
        if rater.consented_at is None:
            raise PageError(403, "Consent needed", "Please open your invitation link and give consent first.")
        if played != "1":
            raise PageError(400, "Please listen first", "Play the clip to the end before rating it.")
        if not item_id or not submission_id or score is None:
            raise PageError(400, "Incomplete rating", "Please choose a rating before submitting.")
        try:
            value = float(score)
        except ValueError:
            raise PageError(400, "Invalid rating", "Please choose a rating from the scale.") from None
        try:
            stored = service.submit_rating(rater.rater_id, item_id, value, submission_id, require_listened=True)
        except NotListened:
            log.warning("rater %s: rating for item %s refused: the whole clip was not sent", rater.rater_id, item_id)
            raise PageError(400, "Clip not played to the end",
                            "This clip has not been played to the end yet: the whole clip has not been sent to "
                            "your browser. Play it to the end, then rate it.") from None
        except Forbidden:
            log.warning("rater %s: refused rating for item not in assignment or closed campaign", rater.rater_id)
            raise PageError(403, "Not allowed", "This clip is not part of your listening test, "
                            "or the test has closed.") from None
        except Conflict:
            raise PageError(409, "Already rated", "You already rated this clip. Reload the page to continue.") from None
        except NotFound:
            raise PageError(404, "Invitation not found", "This invitation link is not valid.") from None
        except ValueError:
            raise PageError(400, "Invalid rating", "Please choose a rating from the scale.") from None
        if not stored:
            log.info("rater %s: duplicate submission for item %s ignored", rater.rater_id, item_id)
        target = "done" if service.progress(rater.rater_id).finished else "rate"
        return RedirectResponse(f"/r/{token}/{target}", status_code=303)

    @app.get("/r/{token}/done", response_class=HTMLResponse)
    def done(request: Request, token: str) -> Response:
        rater = rater_or_404(token)
        progress = service.progress(rater.rater_id)
        if not progress.finished:
            return RedirectResponse(f"/r/{token}/rate" if rater.consented_at else f"/r/{token}", status_code=303)
        return render(request, "done.html", campaign=campaign_info(rater.campaign_id), total=progress.total)

    def audio_for(request: Request, token: str, item_id: str, reference: bool) -> Response:
        """The clip (or its MUSHRA reference), whole or the one byte range asked for; the ranges of
        the clip to rate are recorded as sent to this rater (`MosService.record_served`)."""
        rater = consented_rater(token)
        item = service.assigned_item(rater.rater_id, item_id)
        sha = None if item is None else (item.reference_sha256 if reference else item.audio_sha256)
        if sha is None:
            raise PageError(404, "Not found", "There is no such clip in your listening test.")
        try:
            with store.local_file(sha, "wav") as path, path.open("rb") as handle:  # S3: a temporary copy
                size = os.fstat(handle.fileno()).st_size
                try:
                    wanted = byte_range(request.headers.get("range"), size)
                except RangeNotSatisfiable:
                    return Response(status_code=416, headers={"Content-Range": f"bytes */{size}",
                                                              "Accept-Ranges": "bytes"})
                start, end = wanted or (0, size)
                handle.seek(start)
                data = handle.read(end - start)
        except FileNotFoundError:
            log.error("rater %s: audio for item %s missing from the asset store", rater.rater_id, item_id)
            raise PageError(404, "Not found", "This clip is missing; please tell the test organizer.") from None
        headers = {"Accept-Ranges": "bytes"}
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        on_sent = None if reference else functools.partial(service.record_served, item_id, start, start + len(data),
                                                           size)
        return ServedAudio(data, 206 if wanted is not None else 200, headers, on_sent)

    @app.get("/r/{token}/audio/{item_id}")
    def audio(request: Request, token: str, item_id: str) -> Response:
        return audio_for(request, token, item_id, reference=False)

    @app.get("/r/{token}/audio/{item_id}/reference")
    def audio_reference(request: Request, token: str, item_id: str) -> Response:
        return audio_for(request, token, item_id, reference=True)

    @app.get("/campaigns/{campaign_id}/results", response_class=HTMLResponse)
    def results(request: Request, campaign_id: str, admin: str | None = None) -> HTMLResponse:
        supplied = admin or request.headers.get("x-admin-token")
        auth = request.headers.get("authorization", "")
        if not supplied and auth.lower().startswith("bearer "):
            supplied = auth[7:].strip()
        client = request.client.host if request.client else None
        if not security.check_admin(supplied, client, admin_token):
            raise PageError(403, "Not allowed", "The results page needs the admin token"
                            if admin_token else "The results page is only available from this machine.")
        try:
            campaign = service.campaign(campaign_id)
            res = service.results(campaign_id)
        except NotFound:
            raise PageError(404, "Campaign not found", "There is no campaign with this id.") from None
        by_model = [{"label": m.model_version, "mos": _fmt(m.mos), "ci": _ci(m.ci_low, m.ci_high),
                     "n_ratings": m.n_ratings, "n_raters": m.n_raters} for m in res.model_versions]
        by_asset = [{"label": a.asset_id if a.role == "test" else f"{a.asset_id} ({a.role})",
                     "model": a.model_version or "", "mos": _fmt(a.mos),
                     "ci": _ci(a.ci_low, a.ci_high), "n_ratings": a.n_ratings,
                     "n_raters": a.n_raters} for a in res.assets]
        summary = {"n_valid_raters": res.n_valid_raters, "n_screened": res.n_screened,
                   "alpha": f"{_fmt(res.alpha, 3)} ({res.alpha_level})", "quorum_met": "yes" if res.quorum_met else "no"}
        plot = _plot_png(res.model_versions, res.scale, f"{campaign.name}: MOS by model version")
        return render(request, "results.html", campaign=campaign, summary=summary, by_model=by_model,
                      by_asset=by_asset, plot_png=plot, method_label=campaign.method.upper(),
                      **scale_context(campaign))

    return app
