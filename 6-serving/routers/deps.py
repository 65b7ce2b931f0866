"""Dependencies shared by the routers."""

from fastapi import Request

from musicops.serving.keys import ApiKey
from musicops.serving.service import Service


def service(request: Request) -> Service:
    return request.app.state.svc


def api_key(request: Request) -> ApiKey:
    """Authenticate (401) and apply the key's rate limit (429) before any work."""
    return request.app.state.svc.authenticate(request)
