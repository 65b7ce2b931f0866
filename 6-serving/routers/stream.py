"""WS /v1/stream/ws: endless/adaptive music, streamed as PCM16 while it is generated."""

from typing import Any, cast

from fastapi import APIRouter, Request, WebSocket
from pydantic import ValidationError

from musicops.serving.service import ApiError, Service
from musicops.serving.streaming import WsStart, ws_session

router = APIRouter(prefix="/v1", tags=["generate"])


@router.websocket("/stream/ws")
async def stream_ws(websocket: WebSocket) -> None:
    """Auth as every route (`Authorization: Bearer <key>` or `X-API-Key` on the handshake; refused
    with 403 before the upgrade otherwise). Then the client sends `{"prompt", "seed", "segment_s",
    "max_s", "context_s"?, "sampling"?}`; the server sends `{"type": "start", ...}`, binary PCM16
    chunks, and `{"type": "end", "asset_id", "samples", "segments", "prompts"}`. `{"prompt": "..."}`
    changes the prompt from the next segment on; `{"stop": true}` ends the stream."""
    svc: Service = websocket.app.state.svc
    try:
        svc.require_ready()
        key = svc.authenticate(cast(Request, websocket))
    except ApiError as exc:
        svc.metrics.error(exc.cause)
        await websocket.close(code=1008, reason=exc.message[:120])
        return
    await websocket.accept()
    try:
        message: Any = await websocket.receive_json()
        start = WsStart.model_validate(message)
        limit = svc.config.max_duration_s
        if limit is not None and start.segment_s + start.context_s > limit:
            raise ValueError(f"segment_s + context_s must be at most this server's max duration ({limit:g} s)")
        svc.reserve(key, start.max_s)
    except (ValidationError, ValueError, ApiError) as exc:
        code = exc.code if isinstance(exc, ApiError) else "invalid_request"
        svc.metrics.error(exc.cause if isinstance(exc, ApiError) else "validation")
        await websocket.send_json({"type": "error", "code": code, "message": str(exc)[:2000]})
        await websocket.close(code=1008)
        return
    await ws_session(websocket, svc, key, start)
